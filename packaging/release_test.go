package packaging

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"debug/pe"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The release tests read what scripts/release.sh (task release) wrote; scripts/test.sh
// builds it and points QUICTUN_RELEASE_DIST at it. QUICTUN_RELEASE_PREVIOUS, when set,
// is an earlier build of the same commit that must have the same bytes.
func distDir(t *testing.T) string {
	t.Helper()
	dist := os.Getenv("QUICTUN_RELEASE_DIST")
	if dist == "" {
		t.Skip("QUICTUN_RELEASE_DIST is not set: run scripts/release.sh, then point it at dist/ (scripts/test.sh does both)")
	}
	return dist
}

// target is one platform of the release.
type target struct {
	os, arch, dir string // dir: goreleaser's build folder suffix
	exe           string
	machine       any // elf.Machine or pe machine constant
}

var targets = []target{
	{"linux", "amd64", "linux_amd64_v1", "", elf.EM_X86_64},
	{"linux", "arm64", "linux_arm64_v8.0", "", elf.EM_AARCH64},
	{"linux", "armv7", "linux_arm_7", "", elf.EM_ARM},
	{"windows", "amd64", "windows_amd64_v1", ".exe", uint16(pe.IMAGE_FILE_MACHINE_AMD64)},
	{"windows", "arm64", "windows_arm64_v8.0", ".exe", uint16(pe.IMAGE_FILE_MACHINE_ARM64)},
}

var programs = []string{"quictun-server", "quictun-client"}

// releaseVersion reads the version and commit the binaries were stamped with.
func releaseVersion(t *testing.T, dist string) (version, commit string) {
	t.Helper()
	out, err := exec.Command(filepath.Join(dist, "quictun-server_linux_amd64_v1", "quictun-server"), "--version").Output()
	if err != nil {
		t.Fatalf("quictun-server --version: %v", err)
	}
	m := regexp.MustCompile(`^(\S+) \(commit ([0-9a-f]{12}(-dirty)?)\)\n$`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("--version prints %q, want VERSION (commit 0123456789ab)", out)
	}
	return m[1], m[2]
}

// entry is one file of an archive.
type entry struct {
	name  string
	mode  os.FileMode
	mtime time.Time
	data  []byte
}

func readTarGz(t *testing.T, path string) []entry {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var out []entry
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if h.Uname != "root" || h.Gname != "root" {
			t.Errorf("%s: %s owned by %s:%s, want root:root", path, h.Name, h.Uname, h.Gname)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, entry{h.Name, h.FileInfo().Mode(), h.ModTime, data})
	}
}

func readZip(t *testing.T, path string) []entry {
	t.Helper()
	z, err := zip.OpenReader(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer z.Close()
	var out []entry
	for _, f := range z.File {
		r, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, entry{f.Name, f.Mode(), f.Modified, data})
	}
	return out
}

// Every archive holds both programs, the example configs, README and LICENSE, under one
// folder named like the archive, all with the commit's time; the programs are the
// binaries of their platform, stamped with the release's version.
func TestReleaseArchives(t *testing.T) {
	dist := distDir(t)
	version, _ := releaseVersion(t, dist)
	out, err := exec.Command("git", "log", "-1", "--format=%ct").Output()
	if err != nil {
		t.Fatalf("git log: %v", err)
	}
	sec, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	commitTime := time.Unix(sec, 0)
	for _, tg := range targets {
		t.Run(tg.os+"_"+tg.arch, func(t *testing.T) {
			base := "quictun_" + version + "_" + tg.os + "_" + tg.arch
			var entries []entry
			if tg.os == "windows" {
				entries = readZip(t, filepath.Join(dist, base+".zip"))
			} else {
				entries = readTarGz(t, filepath.Join(dist, base+".tar.gz"))
			}
			want := []string{"LICENSE", "README.md", "examples/client.toml", "examples/server.toml", "quictun-client" + tg.exe, "quictun-server" + tg.exe}
			var got []string
			for _, e := range entries {
				got = append(got, strings.TrimPrefix(e.name, base+"/"))
				if !strings.HasPrefix(e.name, base+"/") {
					t.Errorf("%s is not under %s/", e.name, base)
				}
				if !e.mtime.Equal(commitTime) {
					t.Errorf("%s has mtime %v, want the commit's %v", e.name, e.mtime, commitTime)
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Fatalf("archive holds %v, want %v", got, want)
			}
			for _, e := range entries {
				name := strings.TrimPrefix(e.name, base+"/")
				if !strings.HasPrefix(name, "quictun-") {
					continue
				}
				if tg.os == "linux" && e.mode.Perm() != 0o755 {
					t.Errorf("%s has mode %v, want 0755", name, e.mode)
				}
				checkBinary(t, tg, name, e.data)
			}
		})
	}
}

// checkBinary checks a program's platform, and for Linux that it is static.
func checkBinary(t *testing.T, tg target, name string, data []byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o755); err != nil {
		t.Fatal(err)
	}
	if tg.os == "windows" {
		f, err := pe.Open(path)
		if err != nil {
			t.Fatalf("%s is no Windows program: %v", name, err)
		}
		defer f.Close()
		if f.Machine != tg.machine.(uint16) {
			t.Errorf("%s is for machine %#x, want %#x", name, f.Machine, tg.machine)
		}
		return
	}
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("%s is no ELF program: %v", name, err)
	}
	defer f.Close()
	if f.Machine != tg.machine.(elf.Machine) {
		t.Errorf("%s is for %v, want %v", name, f.Machine, tg.machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("%s is dynamically linked (%v)", name, p.Type)
		}
	}
}

// SHA256SUMS names every archive and package with its right hash, and nothing else.
func TestReleaseChecksums(t *testing.T) {
	dist := distDir(t)
	sums := readSums(t, filepath.Join(dist, "SHA256SUMS"))
	artifacts, _ := filepath.Glob(filepath.Join(dist, "quictun_*"))
	var names []string
	for _, a := range artifacts {
		names = append(names, filepath.Base(a))
	}
	if len(names) != len(targets)+3 { // and a .deb for each Linux architecture
		t.Errorf("dist has %d archives and packages, want %d: %v", len(names), len(targets)+3, names)
	}
	for _, name := range names {
		data, err := os.ReadFile(filepath.Join(dist, name))
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.Sum256(data)
		if sums[name] != hex.EncodeToString(h[:]) {
			t.Errorf("%s: SHA256SUMS says %q, the file has %x", name, sums[name], h)
		}
		delete(sums, name)
	}
	if len(sums) > 0 {
		t.Errorf("SHA256SUMS names files dist does not have: %v", sums)
	}
}

func readSums(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sums := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		hash, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok || len(hash) != 64 {
			t.Fatalf("%s: line %q is not HASH  NAME", path, sc.Text())
		}
		sums[name] = hash
	}
	return sums
}

// Two builds of the same commit give the same bytes: every archive and package of an
// earlier build (QUICTUN_RELEASE_PREVIOUS), and the linux amd64 server built again here
// with an empty build cache, so that nothing is merely copied from the first build.
func TestReleaseReproducible(t *testing.T) {
	dist := distDir(t)
	if previous := os.Getenv("QUICTUN_RELEASE_PREVIOUS"); previous != "" {
		a, b := readSums(t, filepath.Join(previous, "SHA256SUMS")), readSums(t, filepath.Join(dist, "SHA256SUMS"))
		for name, sum := range a {
			if b[name] != sum {
				t.Errorf("%s differs between two builds (%s and %s)", name, sum, b[name])
			}
		}
		if len(a) != len(b) {
			t.Errorf("the builds have %d and %d files", len(a), len(b))
		}
	} else {
		t.Log("QUICTUN_RELEASE_PREVIOUS is not set: archives not compared with an earlier build")
	}
	version, commit := releaseVersion(t, dist)
	out := filepath.Join(t.TempDir(), "quictun-server")
	cmd := exec.Command("go", "build", "-o", out, "-trimpath", "-buildvcs=false",
		"-ldflags", "-s -w -buildid= -X github.com/quictun/quictun/cmd/internal/cli.version="+version+
			" -X github.com/quictun/quictun/cmd/internal/cli.commit="+commit,
		"github.com/quictun/quictun/cmd/quictun-server")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOAMD64=v1", "GOCACHE="+t.TempDir(), "GOFLAGS=")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	rebuilt, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	released, err := os.ReadFile(filepath.Join(dist, "quictun-server_linux_amd64_v1", "quictun-server"))
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(rebuilt) != sha256.Sum256(released) {
		t.Fatalf("quictun-server built again with an empty cache differs from the release's (%d and %d bytes)", len(rebuilt), len(released))
	}
}
