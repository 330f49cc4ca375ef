// Command quictun-server is the server endpoint of quictun: it listens on UDP
// for client endpoints and connects each of their tunnels to the server
// application its token names.
package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/alecthomas/kong"

	"github.com/quictun/quictun/cmd/internal/cli"
	"github.com/quictun/quictun/codecs/preamble"
	"github.com/quictun/quictun/codecs/sniff"
	"github.com/quictun/quictun/endpoints"
	"github.com/quictun/quictun/endpoints/address"
	"github.com/quictun/quictun/endpoints/policy"
	"github.com/quictun/quictun/endpoints/token"
	"github.com/quictun/quictun/endpoints/trust"
	"github.com/quictun/quictun/engine"
	"github.com/quictun/quictun/recovery"
)

type flags struct {
	Config  kong.ConfigFlag  `help:"TOML file with the same keys as these flags (listen-on = \"...\"); flags override it." placeholder:"FILE"`
	Version kong.VersionFlag `help:"Print the version and exit."`

	ListenOn          string `default:"0.0.0.0:7500" help:"UDP address to listen on for client endpoints (default ${default})." placeholder:"HOST:PORT"`
	TokenParserPlugin string `default:"Cleartext" help:"How tokens name server applications (Cleartext)."`
	TokenParserKey    string `default:"" help:"Key of the token parser: \"\" (token is the address) or \"base64\" (token is its base64)."`

	CertFile             string `help:"Server certificate (PEM). Without it a self-signed pair is generated once and kept in --state-dir." type:"path" placeholder:"FILE"`
	KeyFile              string `help:"Private key of --cert-file (PEM)." type:"path" placeholder:"FILE"`
	CaFile               string `help:"CA certificate(s) that sign client certificates, for --verify-remote-endpoint." type:"path" placeholder:"FILE"`
	VerifyRemoteEndpoint bool   `help:"Require every client endpoint to present a certificate signed by --ca-file (mutual TLS)."`
	StateDir             string `default:"${state_dir}" help:"Where the generated key pair is kept, so the fingerprint stays stable." type:"path" placeholder:"DIR"`

	Allow                []string      `help:"Allow tokens to name only these targets (repeatable; replaces the defaults, see the README): CIDR-OR-HOST:PORTS (10.0.0.0/8:22, 127.0.0.1:5000-5100, db.internal:5432, [2001:db8::/32]:*) or unix:PATH (unix:/run/app.sock, unix:/run/apps/*). Loopback, link-local, cloud metadata and this host's addresses are allowed only by a rule that names them (0.0.0.0/0 does not)." placeholder:"RULE"`
	Deny                 []string      `help:"Refuse these targets, whatever allows them (repeatable; same syntax as --allow)." placeholder:"RULE"`
	MaxSessions          int           `default:"256" help:"Client sessions at once; more are refused (default ${default}; 0 means the default)."`
	MaxTunnels           int           `default:"8192" help:"Tunnels at once over all sessions; more are refused with \"server overloaded\" (default ${default}; 0 means the default)."`
	MaxTunnelsPerSession int           `default:"4096" help:"Tunnels at once on one session (default ${default}; 0 means the default)."`
	MaxPreambleSize      int           `default:"16384" help:"Largest tunnel header (token plus secret) in bytes, at most 16384 (default ${default}; 0 means the default)."`
	MaxTokenSize         int           `help:"Largest token in bytes (default 8192, or --max-preamble-size if that is smaller; 0 means the default); a longer one is refused with \"bad token\"."`
	HandshakeTimeout     time.Duration `default:"10s" help:"How long a new session may take for its TLS handshake, and then to present its secret; and a new tunnel to send its header (default ${default}; 0 means the default)."`

	DialTimeout time.Duration `default:"5s" help:"How long to try to connect to a server application (default ${default}; 0 means the default)."`

	cli.EndpointFlags
}

func main() {
	var f flags
	file := cli.Parse(&f, "quictun-server", "The server endpoint of quictun: a fast, secure TCP/UNIX-socket tunnel over QUIC.\n\n"+
		"Clients reach every application behind this one UDP port; each tunnel's token names its target.\n"+
		"Example: quictun-server --listen-on 0.0.0.0:7500",
		kong.Vars{"state_dir": cli.StateDir()})
	log := f.Logger(os.Stderr)
	if err := run(f, file, log); err != nil {
		cli.Fatal(log, "quictun-server", err)
	}
}

func run(f flags, file *cli.Config, log *slog.Logger) error {
	if err := address.ParseHostPort(f.ListenOn); err != nil {
		return fmt.Errorf("%s: %w", file.Origin("listen-on"), err)
	}
	parser, err := token.NewParser(f.TokenParserPlugin, f.TokenParserKey)
	if err != nil {
		return fmt.Errorf("%s: %w", file.Origin("token-parser-plugin"), err)
	}
	if f.MaxPreambleSize > preamble.MaxHeaderLen {
		return fmt.Errorf("%s = %d: above the hard cap of %d bytes", file.Origin("max-preamble-size"), f.MaxPreambleSize, preamble.MaxHeaderLen)
	}
	id, err := trust.LoadServer(trust.ServerOptions{
		CertFile: f.CertFile, KeyFile: f.KeyFile, StateDir: f.StateDir,
		VerifyClient: f.VerifyRemoteEndpoint, CAFile: f.CaFile,
	}, log)
	if err != nil {
		return file.Locate(err)
	}
	rules, err := policy.Parse(f.Allow, f.Deny)
	if err != nil {
		key := "allow"
		if re := (*policy.RuleError)(nil); errors.As(err, &re) {
			key = re.List
		}
		return fmt.Errorf("%s: %w", file.Origin(key), err)
	}
	var listening []string
	if f.HttpdListenOn != "" {
		listening = append(listening, f.HttpdListenOn)
	}
	secret, err := f.Secret.Load(log)
	if err != nil {
		return file.Locate(err)
	}
	fec, err := recovery.ParseConfig(f.Fec)
	if err != nil {
		return fmt.Errorf("%s: %w", file.Origin("fec"), err)
	}
	srv, err := endpoints.NewServer(endpoints.ServerConfig{
		Recovery: &fec,
		ListenOn: f.ListenOn, Parser: parser, TLS: id.TLS, ResetKey: &id.ResetKey,
		Engine:      engine.Config{Sniffers: sniff.Default(), IdleTimeout: f.IdleTimeout},
		DialTimeout: f.DialTimeout, DrainTimeout: f.DrainTimeout, PreambleTimeout: f.HandshakeTimeout,
		Secret: secret, Rules: rules, Listening: listening,
		Limits: endpoints.Limits{MaxSessions: f.MaxSessions, MaxTunnels: f.MaxTunnels,
			MaxTunnelsPerSession: f.MaxTunnelsPerSession, MaxHeaderSize: f.MaxPreambleSize, MaxTokenSize: f.MaxTokenSize},
		Logger: log,
	})
	if err != nil {
		return err
	}
	log.Info("quictun-server listening", "version", cli.Version(), "udp", srv.Addr().String(),
		"fingerprint", id.Fingerprint, "cert", id.CertPath, "mutual_tls", f.VerifyRemoteEndpoint,
		"secret", secret != nil, "fec", f.Fec)

	ctx, stop := cli.SignalContext(log)
	defer stop()
	return file.Locate(cli.RunWithAPI(ctx, f.HttpdListenOn, f.HttpdToken, srv, log))
}
