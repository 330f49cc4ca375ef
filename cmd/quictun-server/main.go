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
	"github.com/quictun/quictun/endpoints/identity"
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

	Allow                 []string      `help:"Allow tokens to name only these targets (repeatable; replaces the defaults, see the README): CIDR-OR-HOST:PORTS (10.0.0.0/8:22, 127.0.0.1:5000-5100, db.internal:5432, [2001:db8::/32]:*) or unix:PATH (unix:/run/app.sock, unix:/run/apps/*). Loopback, link-local, cloud metadata and this host's addresses are allowed only by a rule that names them (0.0.0.0/0 does not)." placeholder:"RULE"`
	Deny                  []string      `help:"Refuse these targets, whatever allows them (repeatable; same syntax as --allow)." placeholder:"RULE"`
	AllowBind             []string      `help:"Let clients' reverse forwards have this server listen here (repeatable; nothing is bound without a rule): IP-OR-CIDR:PORTS (0.0.0.0:2222, 198.18.0.0/15:8000-8100, [::]:2222; TCP listeners) or unix:PATH, unix:DIR/*, and udp:IP-OR-CIDR:PORTS for UDP sockets (udp:0.0.0.0:5353: a rule without udp: opens no UDP port). The unspecified address (0.0.0.0, ::) only by a rule that names it. An identity's bind= rules replace these for it. Only authenticated clients may bind. SIGHUP re-reads them." placeholder:"RULE"`
	ReverseGrace          time.Duration `default:"30s" help:"How long a reverse forward's listener stays bound while its client is away; its next session takes it over (default ${default}; 0 means the default)."`
	SessionWait           time.Duration `default:"10s" help:"How long a connection to a reverse forward waits for its client's session before it is closed (default ${default}; 0 means the default)."`
	Identities            string        `help:"File of the clients this server knows, one per line: NAME SECRET [allow=RULES] [deny=RULES] [cert=NAME] [max-sessions=N] [max-tunnels=N] (SECRET - for a certificate only; see the README). SIGHUP re-reads it: sessions of removed or changed identities are closed, others untouched." type:"path" placeholder:"FILE"`
	MaxSessions           int           `default:"256" help:"Authenticated client sessions at once; more are refused (default ${default}; 0 means the default)."`
	MaxSessionsPerAddress int           `default:"64" help:"Sessions at once from one client address (IPv4 address or IPv6 /64), authenticated or not (default ${default}; 0 means the default)."`
	MaxPendingSessions    int           `default:"16" help:"Sessions that have not yet authenticated; a newcomer evicts the oldest (default ${default}; 0 means the default)."`
	MaxPendingPerAddress  int           `default:"4" help:"Unauthenticated sessions from one client address (default ${default}; 0 means the default)."`
	MaxTunnels            int           `default:"8192" help:"Tunnels at once over all sessions; more are refused with \"server overloaded\" (default ${default}; 0 means the default)."`
	MaxTunnelsPerSession  int           `default:"4096" help:"Tunnels at once on one session (default ${default}; 0 means the default)."`
	MaxPreambleSize       int           `default:"16384" help:"Largest tunnel header (its token and framing) in bytes, at most 16384 (default ${default}; 0 means the default)."`
	MaxTokenSize          int           `help:"Largest token in bytes (default 8192, or --max-preamble-size if that is smaller; 0 means the default); a longer one is refused with \"bad token\"."`
	HandshakeTimeout      time.Duration `default:"10s" help:"How long a new session may take for its TLS handshake, and then to prove its identity; and a new tunnel to send its header (default ${default}; 0 means the default)."`

	NoSpeedtest bool `help:"Refuse speed tests (quictun-client --speedtest). Without it, clients that prove an identity may run them, each download or upload bounded to 10 s and 1 GiB, one at a time per identity."`

	DialTimeout time.Duration `default:"5s" help:"How long to try to connect to a server application (default ${default}; 0 means the default)."`

	cli.EndpointFlags
}

const name = "quictun-server"

func vars() kong.Vars { return kong.Vars{"state_dir": cli.StateDir()} }

func main() {
	var f flags
	file := cli.Parse(&f, name, "The server endpoint of quictun: a fast, secure TCP/UNIX-socket tunnel over QUIC.\n\n"+
		"Clients reach every application behind this one UDP port; each tunnel's token names its target.\n"+
		"Example: quictun-server --listen-on 0.0.0.0:7500",
		vars())
	log := f.Logger(os.Stderr)
	if err := run(f, file, log); err != nil {
		cli.Fatal(log, "quictun-server", err)
	}
}

func run(f flags, file *cli.Config, log *slog.Logger) error {
	if handled, err := f.ManageService("quictun-server"); handled {
		return err
	}
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
	id, err := trust.LoadServer(tlsOptions(f), log)
	if err != nil {
		return file.Locate(err)
	}
	tlsLive := trust.NewLive(id.TLS)
	secret, ids, rules, err := access(f, file, log)
	if err != nil {
		return err
	}
	binds, err := bindRules(f, file)
	if err != nil {
		return err
	}
	var listening []string
	if f.HttpdListenOn != "" {
		listening = append(listening, f.HttpdListenOn)
	}
	fec, err := recovery.ParseConfig(f.Fec)
	if err != nil {
		return fmt.Errorf("%s: %w", file.Origin("fec"), err)
	}
	srv, err := endpoints.NewServer(endpoints.ServerConfig{
		Recovery: &fec, Congestion: f.Congestion,
		ListenOn: f.ListenOn, Parser: parser, TLS: tlsLive.Config(), ResetKey: &id.ResetKey,
		Engine: engine.Config{Sniffers: sniff.Default(), DatagramSniffers: sniff.DefaultDatagram(), IdleTimeout: f.IdleTimeout,
			Flow: engine.FlowTimeouts{Unreplied: f.UdpTimeout, Replied: f.UdpRepliedTimeout}},
		DialTimeout: f.DialTimeout, DrainTimeout: f.DrainTimeout, PreambleTimeout: f.HandshakeTimeout,
		Secret: secret, Identities: ids, Rules: rules, Listening: listening,
		AllowBind: binds, ReverseGrace: f.ReverseGrace, SessionWait: f.SessionWait,
		Limits: endpoints.Limits{MaxSessions: f.MaxSessions, MaxTunnels: f.MaxTunnels,
			MaxSessionsPerAddress: f.MaxSessionsPerAddress, MaxPendingSessions: f.MaxPendingSessions, MaxPendingPerAddress: f.MaxPendingPerAddress,
			MaxTunnelsPerSession: f.MaxTunnelsPerSession, MaxHeaderSize: f.MaxPreambleSize, MaxTokenSize: f.MaxTokenSize},
		SpeedTest: endpoints.SpeedTestLimits{Off: f.NoSpeedtest},
		Logger:    log,
	})
	if err != nil {
		return err
	}
	log.Info("quictun-server listening", "version", cli.Version(), "udp", srv.Addr().String(),
		"fingerprint", id.Fingerprint, "cert", id.CertPath, "mutual_tls", f.VerifyRemoteEndpoint,
		"secret", secret != nil, "identities", f.Identities, "fec", f.Fec, "allow_bind", binds.String())

	ctx, stop := cli.SignalContext(log)
	defer stop()
	stopHangup := cli.OnHangup(ctx, func() {
		log.Info("SIGHUP: reloading identities, rules and certificates")
		if err := reload(srv, tlsLive, f, log); err != nil {
			log.Error("reload refused: the running identities, rules and certificates stay", "err", err)
		}
	})
	defer stopHangup()
	return file.Locate(cli.RunWithAPI(ctx, f.HttpdListenOn, f.HttpdToken, srv, log))
}

// reload reads the configuration again and applies it whole or not at all.
// The certificates are read first: a new one reaches new handshakes only, and
// mutual TLS cannot be switched on or off in a running server.
func reload(srv *endpoints.Server, tlsLive *trust.Live, running flags, log *slog.Logger) error {
	var g flags
	file, err := cli.Reparse(&g, name, vars())
	if err != nil {
		return err
	}
	if g.VerifyRemoteEndpoint != running.VerifyRemoteEndpoint {
		return fmt.Errorf("%s: changed; restart the server to switch mutual TLS", file.Origin("verify-remote-endpoint"))
	}
	id, err := trust.LoadServer(tlsOptions(g), log)
	if err != nil {
		return file.Locate(err)
	}
	binds, err := bindRules(g, file)
	if err != nil {
		return err
	}
	_, ids, rules, err := access(g, file, log)
	if err != nil {
		return err
	}
	if err := srv.Reload(ids, rules); err != nil {
		return err
	}
	srv.SetBindRules(binds)
	tlsLive.Swap(id.TLS)
	log.Info("certificates reloaded", "fingerprint", id.Fingerprint, "cert", id.CertPath)
	return nil
}

func tlsOptions(f flags) trust.ServerOptions {
	return trust.ServerOptions{
		CertFile: f.CertFile, KeyFile: f.KeyFile, StateDir: f.StateDir,
		VerifyClient: f.VerifyRemoteEndpoint, CAFile: f.CaFile,
	}
}

// access reads who may use the server and what they may reach: the shared
// secret, the identities file and the --allow/--deny rules. Reload runs it
// again.
func access(f flags, file *cli.Config, log *slog.Logger) (secret []byte, ids *identity.Table, rules *policy.Rules, err error) {
	rules, err = policy.Parse(f.Allow, f.Deny)
	if err != nil {
		key := "allow"
		if re := (*policy.RuleError)(nil); errors.As(err, &re) {
			key = re.List
		}
		return nil, nil, nil, fmt.Errorf("%s: %w", file.Origin(key), err)
	}
	if secret, err = f.Secret.Load(log); err != nil {
		return nil, nil, nil, file.Locate(err)
	}
	if len(secret) > 0 && len(secret) < identity.MinSecretLen {
		log.Warn("the shared secret is short: easy to guess offline; use 16 or more random bytes", "length", len(secret))
	}
	if f.Identities == "" {
		return secret, nil, rules, nil
	}
	ids, warnings, err := identity.Load(f.Identities, secret)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w", file.Origin("identities"), err)
	}
	for _, w := range warnings {
		log.Warn(w)
	}
	return secret, ids, rules, nil
}

// bindRules reads --allow-bind.
func bindRules(f flags, file *cli.Config) (*policy.BindRules, error) {
	b, err := policy.ParseBind(f.AllowBind)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file.Origin("allow-bind"), err)
	}
	return b, nil
}
