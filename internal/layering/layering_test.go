// Package layering enforces the dependency direction of DESIGN.md:
// cmd -> endpoints -> engine -> codecs, bench -> netem, and nothing imports
// cmd or bench. A rule broken here is a design change: change DESIGN.md first.
package layering

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/quictun/quictun/"

// forbidden lists, per folder, the imports its packages must not have.
var forbidden = map[string][]string{
	"codecs/":    {module + "engine", module + "endpoints", module + "cmd", module + "bench", module + "netem", module + "recovery"},
	"engine/":    {module + "endpoints", module + "cmd", module + "bench", module + "netem", "github.com/valyala/fasthttp", "github.com/alecthomas/kong", "github.com/pelletier/go-toml"},
	"recovery/":  {module + "engine", module + "endpoints", module + "cmd", module + "bench"},
	"netem/":     {module + "engine", module + "endpoints", module + "cmd", module + "bench", module + "recovery"},
	"endpoints/": {module + "cmd", module + "bench", module + "netem", "github.com/alecthomas/kong", "github.com/pelletier/go-toml"},
	"bench/":     {module + "cmd"},
	// The congestion controller talks to quic-go alone.
	"congestion/": {module + "engine", module + "endpoints", module + "cmd", module + "bench", module + "netem", module + "recovery", module + "codecs"},
}

func TestImportsFollowTheLayers(t *testing.T) {
	out, err := exec.Command("go", "list", "-e", "-json=ImportPath,Imports", module+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		rel := strings.TrimPrefix(p.ImportPath, module)
		for folder, bad := range forbidden {
			if !strings.HasPrefix(rel+"/", folder) {
				continue
			}
			for _, imp := range p.Imports {
				for _, b := range bad {
					if imp == b || strings.HasPrefix(imp, b+"/") {
						t.Errorf("%s imports %s, against the layering of DESIGN.md", p.ImportPath, imp)
					}
				}
			}
		}
		// Only the bench command may import bench.
		for _, imp := range p.Imports {
			if strings.HasPrefix(imp, module+"bench") && !strings.HasPrefix(rel, "bench") && rel != "cmd/quictun-bench" {
				t.Errorf("%s imports %s: nothing outside bench/ and its command does", p.ImportPath, imp)
			}
		}
	}
}
