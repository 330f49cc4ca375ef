package contender

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/quictun/quictun/bench"
)

// HysteriaEnv names the environment variable that gives the hysteria binary's path.
const HysteriaEnv = "QUICTUN_BENCH_HYSTERIA"

// hysteriaPeer is where the project keeps a prebuilt hysteria, relative to the
// module root (the harness never builds it: its quic-go fork is not on the module proxy).
const hysteriaPeer = "../shared/peers/hysteria"

// hysteria runs hysteria 2 (github.com/apernet/hysteria) as a TCP forward: its server
// on the server host, its client with one tcpForwarding entry on the client host. It
// brings its own congestion control: BBR by default, or Brutal, a fixed-rate sender
// that must be told the link's rate and then makes up for the loss it measures. The
// Brutal contender is told the scenario's true rate, its best case.
type hysteria struct {
	name     string
	program  string
	brutal   bool
	stateDir string
	cert     *hysteriaCert
}

// hysteriaCert is the server's self-signed key pair, made once per harness run.
type hysteriaCert struct {
	once      sync.Once
	cert, key string // PEM files
	err       error
}

func newHysteria(name string, cfg Config) (Contender, error) {
	program, err := findHysteria(cfg.Hysteria)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %v", name, ErrUnavailable, err)
	}
	return &hysteria{name: name, program: program, brutal: name == bench.HysteriaBrutal, stateDir: cfg.StateDir, cert: &hysteriaCert{}}, nil
}

// findHysteria returns the first of: the configured path, $QUICTUN_BENCH_HYSTERIA,
// hysteria on PATH, ../shared/peers/hysteria beside the module root.
func findHysteria(configured string) (string, error) {
	if configured == "" {
		configured = os.Getenv(HysteriaEnv)
	}
	if configured != "" {
		p, err := exec.LookPath(configured)
		if err != nil {
			return "", fmt.Errorf("hysteria binary %s: %v", configured, err)
		}
		return p, nil
	}
	if p, err := exec.LookPath("hysteria"); err == nil {
		return p, nil
	}
	if root, ok := moduleRoot(); ok {
		if p, err := exec.LookPath(filepath.Join(root, hysteriaPeer)); err == nil {
			return filepath.Clean(p), nil
		}
	}
	return "", fmt.Errorf("no hysteria binary: set %s, put hysteria on PATH, or place it at %s beside the module", HysteriaEnv, hysteriaPeer)
}

// moduleRoot is the nearest folder at or above the working directory with a go.mod.
func moduleRoot() (string, bool) {
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

func (h *hysteria) Name() string { return h.name }

func (h *hysteria) Tuning() string {
	if h.brutal {
		return "hysteria 2, Brutal congestion control told the link's true rate (bandwidth up/down = the scenario's rate), default QUIC windows, TLS with a self-signed certificate"
	}
	return "hysteria 2, default (BBR) congestion control, default QUIC windows, TLS with a self-signed certificate"
}

func (h *hysteria) Start(ctx context.Context, hosts Hosts, s bench.Scenario, target netip.AddrPort) (*Path, error) {
	if h.brutal && s.RateMbps <= 0 {
		return nil, fmt.Errorf("%s: Brutal must be told a link rate, and this scenario has none (host speed)", h.name)
	}
	cert, key, err := h.keyPair()
	if err != nil {
		return nil, err
	}
	udpPort, err := hosts.FreePort(ServerSide, "udp")
	if err != nil {
		return nil, err
	}
	tcpPort, err := hosts.FreePort(ClientSide, "tcp")
	if err != nil {
		return nil, err
	}
	serverAddr := hostPort(hosts.Addr(ServerSide), udpPort)
	listen := hostPort(hosts.Addr(ClientSide), tcpPort)
	serverConf, clientConf := h.configs(s, serverAddr, listen, target, cert, key)
	dir, err := os.MkdirTemp(h.stateDir, h.name+"-")
	if err != nil {
		return nil, err
	}
	serverFile, clientFile := filepath.Join(dir, "server.json"), filepath.Join(dir, "client.json")
	if err := errors.Join(writeJSON(serverFile, serverConf), writeJSON(clientFile, clientConf)); err != nil {
		return nil, err
	}
	common := []string{"--disable-update-check", "--log-level", "warn"}
	server := hosts.Command(ctx, ServerSide, h.program, append([]string{"server", "-c", serverFile}, common...)...)
	client := hosts.Command(ctx, ClientSide, h.program, append([]string{"client", "-c", clientFile}, common...)...)
	endpoints, err := startPair(ctx, hosts, h.name, server, client, udpPort, tcpPort)
	if err != nil {
		return nil, err
	}
	return &Path{Dial: netip.MustParseAddrPort(listen), Endpoints: endpoints}, nil
}

// configs are the server's and the client's configuration files, as JSON objects. The
// password is no secret: both ends are the harness's own, on a link inside this machine.
func (h *hysteria) configs(s bench.Scenario, serverAddr, listen string, target netip.AddrPort, cert, key string) (server, client map[string]any) {
	server = map[string]any{
		"listen": serverAddr,
		"tls":    map[string]any{"cert": cert, "key": key},
		"auth":   map[string]any{"type": "password", "password": "bench"},
	}
	client = map[string]any{
		"server":        serverAddr,
		"auth":          "bench",
		"tls":           map[string]any{"insecure": true},
		"tcpForwarding": []any{map[string]any{"listen": listen, "remote": target.String()}},
	}
	if h.brutal {
		rate := strconv.FormatFloat(s.RateMbps, 'f', -1, 64) + " mbps"
		client["bandwidth"] = map[string]any{"up": rate, "down": rate}
	}
	return server, client
}

func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}

// keyPair makes the server's self-signed certificate once per harness run, in the
// state folder (the client does not verify it: tls.insecure).
func (h *hysteria) keyPair() (cert, key string, err error) {
	c := h.cert
	c.once.Do(func() {
		dir := filepath.Join(h.stateDir, "hysteria-tls")
		if c.err = os.MkdirAll(dir, 0o700); c.err != nil {
			return
		}
		c.cert, c.key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
		c.err = writeSelfSigned(c.cert, c.key)
	})
	return c.cert, c.key, c.err
}

func writeSelfSigned(certFile, keyFile string) error {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	// No DNS names: hysteria's server then takes any SNI (with one, its SNI guard
	// refuses a client that dials an IP address).
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "quictun-bench"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(30 * 24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return err
	}
	return errors.Join(
		os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600),
		os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600),
	)
}
