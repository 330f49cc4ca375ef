// Package cli is what the two quictun commands share: the TOML config file
// under their flags, logging, version and signal handling. Wiring only.
package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"

	"github.com/alecthomas/kong"
	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// Config is the TOML file behind --config. Its keys are the long flag names
// ("listen-on = ..."); a flag on the command line overrides the file, the file
// overrides the default. Unknown keys and bad values are errors that name the
// file, line and key.
type Config struct {
	file     string
	values   map[string]any
	lines    map[string]int
	resolved map[string]bool // keys whose value the command line did not override
}

// Loader returns the kong configuration loader and the Config it fills, so that
// validation after parsing can say where a value came from.
func Loader() (kong.ConfigurationLoader, *Config) {
	c := &Config{}
	return func(r io.Reader) (kong.Resolver, error) {
		name := "config"
		if f, ok := r.(*os.File); ok {
			name = f.Name()
		}
		data, err := io.ReadAll(io.LimitReader(r, 1<<20+1))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		if len(data) > 1<<20 {
			return nil, fmt.Errorf("%s: larger than 1 MiB", name)
		}
		values := map[string]any{}
		if err := toml.Unmarshal(data, &values); err != nil {
			var de *toml.DecodeError
			if errors.As(err, &de) {
				row, col := de.Position()
				return nil, fmt.Errorf("%s line %d column %d: %s", name, row, col, de.Error())
			}
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		*c = Config{file: name, values: values, lines: keyLines(data), resolved: map[string]bool{}}
		return c, nil
	}, c
}

// keyLines finds the line of each top-level key.
func keyLines(data []byte) map[string]int {
	lines := map[string]int{}
	p := unstable.Parser{KeepComments: false}
	p.Reset(data)
	for p.NextExpression() {
		e := p.Expression()
		if e.Kind != unstable.KeyValue && e.Kind != unstable.Table && e.Kind != unstable.ArrayTable {
			continue
		}
		it := e.Key()
		if !it.Next() {
			continue
		}
		k := it.Node()
		pos := p.Shape(k.Raw).Start
		if _, seen := lines[string(k.Data)]; !seen {
			lines[string(k.Data)] = pos.Line
		}
	}
	return lines
}

func (c *Config) where(key string) string {
	if l, ok := c.lines[key]; ok {
		return fmt.Sprintf("%s line %d", c.file, l)
	}
	return c.file
}

// notInFile are flags that make no sense in a config file.
var notInFile = []string{"config", "help", "version"}

// Validate refuses keys that are not flags of this command.
func (c *Config) Validate(app *kong.Application) error {
	known := map[string]bool{}
	for _, f := range app.Flags {
		if !slices.Contains(notInFile, f.Name) {
			known[f.Name] = true
		}
	}
	keys := make([]string, 0, len(c.values))
	for k := range c.values {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return c.lines[keys[i]] < c.lines[keys[j]] })
	for _, k := range keys {
		if !known[k] {
			hint := ""
			if alt := strings.ReplaceAll(k, "_", "-"); known[alt] {
				hint = fmt.Sprintf(" (did you mean %q?)", alt)
			}
			return fmt.Errorf("%s: unknown key %q%s", c.where(k), k, hint)
		}
	}
	return nil
}

// Resolve gives kong the file's value for a flag the command line left unset.
// The value is checked here, where the line is known, because kong's own error
// would name only the flag.
func (c *Config) Resolve(_ *kong.Context, _ *kong.Path, flag *kong.Flag) (any, error) {
	v, ok := c.values[flag.Name]
	if !ok {
		return nil, nil
	}
	if enum := flag.EnumSlice(); flag.Enum != "" {
		if s, ok := v.(string); !ok || !slices.Contains(enum, s) {
			return nil, fmt.Errorf("%s: %s = %v: must be one of %s", c.where(flag.Name), flag.Name, v, strings.Join(enum, ", "))
		}
	}
	scratch := reflect.New(flag.Target.Type()).Elem()
	if err := flag.Mapper.Decode(&kong.DecodeContext{Value: flag.Value, Scan: kong.ScanFromTokens(kong.Token{Type: kong.FlagValueToken, Value: v})}, scratch); err != nil {
		return nil, fmt.Errorf("%s: %s = %v: %w", c.where(flag.Name), flag.Name, v, err)
	}
	c.resolved[flag.Name] = true
	return v, nil
}

// Origin names where a flag's value came from, for errors found after parsing:
// "FILE line N: key" when it came from the config file, "--key" otherwise.
func (c *Config) Origin(flag string) string {
	if c != nil && c.resolved[flag] {
		return fmt.Sprintf("%s: %s", c.where(flag), flag)
	}
	return "--" + flag
}

// Parse fills flags from the command line and the --config file, with the
// version and vars available to help texts. Bad input prints usage and exits.
func Parse(flags any, name, description string, vars kong.Vars) *Config {
	loader, file := Loader()
	vars["version"] = Version()
	kong.Parse(flags, kong.Name(name), kong.Description(description),
		kong.UsageOnError(), kong.Configuration(loader), vars)
	return file
}
