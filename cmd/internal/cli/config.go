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
	"time"

	"github.com/alecthomas/kong"
	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"

	"github.com/quictun/quictun/endpoints/trust"
)

// Config is the TOML file behind --config. Its keys are the long flag names
// ("listen-on = ..."); a flag on the command line overrides the file, the file
// overrides the default. Unknown keys and bad values are errors that name the
// file, line and key.
type Config struct {
	file      string
	sensitive map[string]bool // flags whose values errors never show
	values    map[string]any
	lines     map[string]int
	resolved  map[string]bool    // keys whose value the command line did not override
	tables    map[string][]Table // arrays of tables ([[forward]]), which no flag takes whole
}

// Table is one [[KEY]] table of the config file.
type Table struct {
	Line   int
	Values map[string]any
}

// Tables are the file's [[key]] tables, in order; nil without a file.
func (c *Config) Tables(key string) []Table {
	if c == nil {
		return nil
	}
	return c.tables[key]
}

// File names the config file, "" without one.
func (c *Config) File() string {
	if c == nil {
		return ""
	}
	return c.file
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
				if key, ok := sensitiveKeyAt(data, row, c.sensitive); ok {
					return nil, fmt.Errorf("%s line %d column %d: %s is not valid TOML (the parser's message is not shown: "+
						"it may quote the secret); write it as a quoted string: %s = \"...\"", name, row, col, key, key)
				}
				return nil, fmt.Errorf("%s line %d column %d: %s", name, row, col, de.Error())
			}
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		*c = Config{file: name, sensitive: c.sensitive, values: values, lines: keyLines(data), resolved: map[string]bool{}, tables: map[string][]Table{}}
		tableLines := arrayTableLines(data)
		for k, v := range values {
			list, ok := v.([]any)
			if !ok || len(list) == 0 || len(tableLines[k]) != len(list) {
				continue
			}
			tables := make([]Table, 0, len(list))
			for i, item := range list {
				m, ok := item.(map[string]any)
				if !ok {
					break
				}
				tables = append(tables, Table{Line: tableLines[k][i], Values: m})
			}
			if len(tables) == len(list) {
				c.tables[k] = tables
				delete(values, k)
			}
		}
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

// arrayTableLines finds the line of each [[key]] header, in order.
func arrayTableLines(data []byte) map[string][]int {
	lines := map[string][]int{}
	p := unstable.Parser{KeepComments: false}
	p.Reset(data)
	for p.NextExpression() {
		e := p.Expression()
		if e.Kind != unstable.ArrayTable {
			continue
		}
		it := e.Key()
		if !it.Next() {
			continue
		}
		k := it.Node()
		if it.Next() { // [[a.b]]: not a top-level table
			continue
		}
		lines[string(k.Data)] = append(lines[string(k.Data)], p.Shape(k.Raw).Start.Line)
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
	keys := make([]string, 0, len(c.values)+len(c.tables))
	for k := range c.values {
		keys = append(keys, k)
	}
	for k := range c.tables {
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
			return nil, &valueError{fmt.Errorf("%s: %s = %v: must be one of %s", c.where(flag.Name), flag.Name, shown(flag, v), strings.Join(enum, ", "))}
		}
	}
	if err := checkType(flag, v); err != nil {
		return nil, &valueError{fmt.Errorf("%s: %s = %v: %w", c.where(flag.Name), flag.Name, shown(flag, v), err)}
	}
	scratch := reflect.New(flag.Target.Type()).Elem()
	if err := flag.Mapper.Decode(&kong.DecodeContext{Value: flag.Value, Scan: kong.ScanFromTokens(kong.Token{Type: kong.FlagValueToken, Value: v})}, scratch); err != nil {
		if isSensitive(flag) {
			// The mapper's message quotes the value.
			err = fmt.Errorf("not a %s", flag.Target.Type())
		}
		return nil, &valueError{fmt.Errorf("%s: %s = %v: %w", c.where(flag.Name), flag.Name, shown(flag, v), err)}
	}
	c.resolved[flag.Name] = true
	return v, nil
}

// valueError is a bad value in the config file. It names file, line and key
// already, so parse takes it out of kong's wrapping, which would put
// "--key: " in front.
type valueError struct{ err error }

func (e *valueError) Error() string { return e.err.Error() }
func (e *valueError) Unwrap() error { return e.err }

// durationType is the type of the time.Duration flags.
var durationType = reflect.TypeFor[time.Duration]()

// checkType refuses TOML values that kong would take in a surprising way: a
// bare number for a duration (kong reads nanoseconds) and a fraction for a
// whole number (kong rounds it).
func checkType(flag *kong.Flag, v any) error {
	t := flag.Target.Type()
	switch {
	case t == durationType:
		switch v.(type) {
		case string:
		case int64, float64:
			return fmt.Errorf("a duration needs a unit: write %s = \"%vs\" (or ms, m, h)", flag.Name, v)
		default:
			return errors.New(`a duration is a string with a unit, like "5s"`)
		}
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		if _, ok := v.(float64); ok {
			return errors.New("must be a whole number")
		}
	}
	return nil
}

// checkNumbers refuses negative values of number and duration flags, wherever
// they came from. Zero is each flag's default (idle-timeout's is off).
func (c *Config) checkNumbers(flags []*kong.Flag) error {
	for _, f := range flags {
		v := f.Target
		negative := false
		switch {
		case v.CanInt():
			negative = v.Int() < 0
		case v.CanFloat():
			negative = v.Float() < 0
		}
		if negative {
			return fmt.Errorf("%s = %v: must not be negative (0 means the default)", c.Origin(f.Name), v.Interface())
		}
	}
	return nil
}

// Origin names where a flag's value came from, for errors found after parsing:
// "FILE line N: key" when it came from the config file, "--key" otherwise.
func (c *Config) Origin(flag string) string {
	if c != nil && c.resolved[flag] {
		return fmt.Sprintf("%s: %s", c.where(flag), flag)
	}
	return "--" + flag
}

// Locate makes an error in one option's value (a *trust.OptionError, which
// names the option as its flag) name where that value came from, as Origin
// does; other errors pass as they are.
func (c *Config) Locate(err error) error {
	var oe *trust.OptionError
	if errors.As(err, &oe) {
		return fmt.Errorf("%s: %w", c.Origin(oe.Option), oe.Err)
	}
	return err
}

// Parse fills flags from the command line and the --config file, with the
// version and vars available to help texts. Bad input prints the error and a
// hint to --help (not the whole help, which would bury the error) and exits
// with status 2.
func Parse(flags any, name, description string, vars kong.Vars) *Config {
	vars["version"] = Version()
	if err := enterServiceDir(os.Args[1:]); err != nil {
		explain(os.Stderr, name, fmt.Errorf("--service-dir: %w", err))
		os.Exit(2)
	}
	file, err := parse(flags, os.Args[1:], kong.Name(name), kong.Description(description), vars)
	if err != nil {
		explain(os.Stderr, name, err)
		os.Exit(2)
	}
	return file
}

// parse is Parse without the exit, for tests: kong's parsing, the config
// file's checks, and the checks of every number.
func parse(flags any, args []string, options ...kong.Option) (*Config, error) {
	loader, file := Loader()
	p, err := kong.New(flags, append(options, kong.Configuration(loader))...)
	if err != nil {
		return nil, err
	}
	file.sensitive = sensitiveFlags(p.Model)
	ctx, err := p.Parse(args)
	if ve := (*valueError)(nil); errors.As(err, &ve) {
		return nil, ve
	}
	if err != nil {
		return nil, redactArgs(err, args, file.sensitive)
	}
	return file, file.checkNumbers(ctx.Flags())
}

// Reparse reads the command line and the --config file again into flags (a
// zero value of the command's flags), as at start but returning errors: a
// reload (SIGHUP) refuses a config that does not parse and keeps the old one.
func Reparse(flags any, name string, vars kong.Vars) (*Config, error) {
	vars["version"] = Version()
	return parse(flags, os.Args[1:], kong.Name(name), vars, kong.Exit(func(int) {}))
}

// explain prints a command-line or config error the way a user should see it.
func explain(w io.Writer, name string, err error) {
	fmt.Fprintf(w, "%s: error: %v\nRun \"%s --help\" for the flags and their defaults.\n", name, err, name)
}
