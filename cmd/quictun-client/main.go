// Command quictun-client is the client endpoint of quictun: it accepts
// application connections on a TCP port or UNIX socket and carries each over
// QUIC to quictun-server.
package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/alecthomas/kong"

	"github.com/quictun/quictun/cmd/internal/cli"
	"github.com/quictun/quictun/codecs/sniff"
	"github.com/quictun/quictun/endpoints"
	"github.com/quictun/quictun/endpoints/address"
	"github.com/quictun/quictun/endpoints/token"
	"github.com/quictun/quictun/endpoints/trust"
	"github.com/quictun/quictun/engine"
	"github.com/quictun/quictun/recovery"
)

type flags struct {
	Config  kong.ConfigFlag  `help:"TOML file with the same keys as these flags (server-endpoint = \"...\"); flags override it." placeholder:"FILE"`
	Version kong.VersionFlag `help:"Print the version and exit."`

	ListenOn           string        `default:"tcp:127.0.0.1:6500" help:"Where applications connect: tcp:HOST:PORT or unix:PATH (default ${default})." placeholder:"ADDRESS"`
	ServerEndpoint     string        `required:"" help:"UDP address of quictun-server." placeholder:"HOST:PORT"`
	TokenSourcePlugin  string        `default:"Fixed" help:"Where each tunnel's token comes from: Fixed (--token-source is the token), File (lines \"CLIENT-IP-OR-CIDR TOKEN\", * for the rest), Http (GET URL?addr=CLIENT answering {\"token\": ...})."`
	TokenSource        string        `required:"" help:"The token source's value: with Fixed the server application's address, e.g. tcp:10.0.0.5:22 or unix:/run/app.sock." placeholder:"VALUE"`
	TokenSourceTimeout time.Duration `default:"5s" help:"How long the Http token source waits for its answer (default ${default}; 0 means the default)."`

	CertFile             string `help:"Client certificate (PEM) for mutual TLS." type:"path" placeholder:"FILE"`
	KeyFile              string `help:"Private key of --cert-file (PEM)." type:"path" placeholder:"FILE"`
	CaFile               string `help:"Verify the server's certificate against this CA." type:"path" placeholder:"FILE"`
	ServerFingerprint    string `help:"Pin the server's certificate: sha256:HEX, as the server logs it at start." placeholder:"sha256:HEX"`
	KnownHosts           string `default:"${known_hosts}" help:"Without --ca-file or --server-fingerprint, trust the server on first use and remember it here, like SSH." type:"path" placeholder:"FILE"`
	ServerName           string `help:"Name to check in a CA-signed server certificate (default: the host of --server-endpoint)."`
	InsecureSkipVerify   bool   `help:"Accept any server certificate. Only for tests: anyone on the path can read the tunnels."`
	VerifyRemoteEndpoint bool   `help:"Require the server to be verified by --ca-file or --server-fingerprint: refuse trust on first use and --insecure-skip-verify."`

	SessionWait time.Duration `default:"10s" help:"How long a new application connection waits for the session while the server is unreachable (default ${default}; 0 means the default)."`

	cli.EndpointFlags
}

func main() {
	var f flags
	file := cli.Parse(&f, "quictun-client", "The client endpoint of quictun: a fast, secure TCP/UNIX-socket tunnel over QUIC.\n\n"+
		"Applications connect here; each connection becomes a tunnel to the server application the token names.\n"+
		"Example: quictun-client --listen-on tcp:127.0.0.1:6500 --server-endpoint 203.0.113.7:7500 --token-source tcp:10.0.0.5:22",
		kong.Vars{"known_hosts": filepath.Join(cli.StateDir(), "known_hosts")})
	log := f.Logger(os.Stderr)
	if err := run(f, file, log); err != nil {
		cli.Fatal(log, "quictun-client", err)
	}
}

func run(f flags, file *cli.Config, log *slog.Logger) error {
	listen, err := address.ParseListen(f.ListenOn)
	if err != nil {
		return fmt.Errorf("%s: %w", file.Origin("listen-on"), err)
	}
	if err := address.ParseHostPort(f.ServerEndpoint); err != nil {
		return fmt.Errorf("%s: %w", file.Origin("server-endpoint"), err)
	}
	src, err := token.NewSource(f.TokenSourcePlugin, f.TokenSource, token.SourceOptions{Timeout: f.TokenSourceTimeout})
	if err != nil {
		return fmt.Errorf("%s / %s: %w", file.Origin("token-source-plugin"), file.Origin("token-source"), err)
	}
	opts := trust.ClientOptions{
		Endpoint: f.ServerEndpoint, ServerName: f.ServerName,
		CAFile: f.CaFile, Fingerprint: f.ServerFingerprint, KnownHosts: f.KnownHosts,
		InsecureSkipVerify: f.InsecureSkipVerify, RequireVerified: f.VerifyRemoteEndpoint,
		CertFile: f.CertFile, KeyFile: f.KeyFile,
	}
	tlsConf, err := trust.LoadClient(opts, log)
	if err != nil {
		return file.Locate(err)
	}
	secret, err := f.Secret.Load(log)
	if err != nil {
		return file.Locate(err)
	}
	fec, err := recovery.ParseConfig(f.Fec)
	if err != nil {
		return fmt.Errorf("%s: %w", file.Origin("fec"), err)
	}
	client, err := endpoints.NewClient(endpoints.ClientConfig{
		Recovery: &fec,
		ListenOn: listen, ServerEndpoint: f.ServerEndpoint, Tokens: src, TLS: tlsConf, Secret: secret,
		Engine:      engine.Config{Sniffers: sniff.Default(), IdleTimeout: f.IdleTimeout},
		SessionWait: f.SessionWait, DrainTimeout: f.DrainTimeout, Logger: log,
	})
	if err != nil {
		return err
	}
	log.Info("quictun-client listening", "version", cli.Version(), "listen", listen.Network+":"+client.Addr().String(),
		"server", f.ServerEndpoint, "verify", opts.Mode(), "fec", f.Fec)
	ctx, stop := cli.SignalContext(log)
	defer stop()
	return file.Locate(cli.RunWithAPI(ctx, f.HttpdListenOn, f.HttpdToken, client, log))
}
