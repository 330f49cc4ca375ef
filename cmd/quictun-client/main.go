// Command quictun-client is the client endpoint of quictun: it accepts
// application connections on a TCP port or UNIX socket and carries each over
// QUIC to quictun-server.
package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/alecthomas/kong"

	"github.com/quictun/quictun/cmd/internal/cli"
	"github.com/quictun/quictun/codecs/sniff"
	"github.com/quictun/quictun/endpoints"
	"github.com/quictun/quictun/endpoints/address"
	"github.com/quictun/quictun/endpoints/identity"
	"github.com/quictun/quictun/endpoints/trust"
	"github.com/quictun/quictun/engine"
	"github.com/quictun/quictun/recovery"
)

type flags struct {
	Config  kong.ConfigFlag  `help:"TOML file with the same keys as these flags (server-endpoint = \"...\"); flags override it." placeholder:"FILE"`
	Version kong.VersionFlag `help:"Print the version and exit."`

	ListenOn           string        `default:"tcp:127.0.0.1:6500" help:"Where applications connect for the forward of --token-source: tcp:HOST:PORT or unix:PATH, or udp:HOST:PORT where they send datagrams (each source address a flow; default ${default})." placeholder:"ADDRESS"`
	ServerEndpoint     string        `help:"UDP address of quictun-server (required)." placeholder:"HOST:PORT"`
	TokenSourcePlugin  string        `default:"Fixed" help:"Where each tunnel's token comes from: Fixed (--token-source is the token), File (lines \"CLIENT-IP-OR-CIDR TOKEN\", * for the rest), Http (GET URL?addr=CLIENT answering {\"token\": ...})."`
	TokenSource        string        `help:"The token source's value: with Fixed the server application's address, e.g. tcp:10.0.0.5:22, unix:/run/app.sock or udp:10.0.0.5:51820. Makes the forward named default, on --listen-on." placeholder:"VALUE"`
	TokenSourceTimeout time.Duration `default:"5s" help:"How long the Http token source waits for its answer (default ${default}; 0 means the default)."`

	Forward []string `sep:"none" help:"One more forward: applications that connect to LISTEN get tunnels to TOKEN (a Fixed token), e.g. tcp:127.0.0.1:6501=tcp:10.0.0.6:5432; repeat for more, all over one session. Named by LISTEN. The config file's [[forward]] tables say more (name, token-source-plugin, proxy)." placeholder:"LISTEN=TOKEN"`

	Reverse []string `sep:"none" help:"A reverse forward: the server listens on LISTEN (its --allow-bind must permit it) and each connection there reaches TARGET on this side, e.g. tcp:0.0.0.0:2222=tcp:127.0.0.1:22, or udp:0.0.0.0:5353=udp:127.0.0.1:53 (each source address there a flow of datagrams); repeatable. The config file's [[reverse]] tables (name, listen-on, target) say the same with a name." placeholder:"LISTEN=TARGET"`

	SocksListenOn     string `help:"Run a SOCKS5 proxy here (tcp:HOST:PORT or unix:PATH): each connection names its target (IPv4, IPv6 or a host name, resolved by the server), which the server's policy allows or refuses; UDP ASSOCIATE too (on tcp:), each destination a UDP flow." placeholder:"ADDRESS"`
	HttpProxyListenOn string `help:"Run an HTTP proxy here (tcp:HOST:PORT or unix:PATH): CONNECT, and plain requests with an absolute URI." placeholder:"ADDRESS"`
	ProxyUsername     string `help:"Require this user name of the proxies' applications (SOCKS5 RFC 1929, HTTP Proxy-Authorization Basic); with --proxy-password." placeholder:"USER"`
	ProxyPassword     string `help:"The password that goes with --proxy-username. Prefer the environment: a flag shows in ps." env:"QUICTUN_PROXY_PASSWORD" placeholder:"PASSWORD" sensitive:""`

	CertFile             string `help:"Client certificate (PEM) for mutual TLS." type:"path" placeholder:"FILE"`
	KeyFile              string `help:"Private key of --cert-file (PEM)." type:"path" placeholder:"FILE"`
	CaFile               string `help:"Verify the server's certificate against this CA." type:"path" placeholder:"FILE"`
	ServerFingerprint    string `help:"Pin the server's certificate: sha256:HEX, as the server logs it at start." placeholder:"sha256:HEX"`
	KnownHosts           string `default:"${known_hosts}" help:"Without --ca-file or --server-fingerprint, trust the server on first use and remember it here, like SSH." type:"path" placeholder:"FILE"`
	ServerName           string `help:"Name to check in a CA-signed server certificate (default: the host of --server-endpoint)."`
	InsecureSkipVerify   bool   `help:"Accept any server certificate. Only for tests: anyone on the path can read the tunnels."`
	VerifyRemoteEndpoint bool   `help:"Require the server to be verified by --ca-file or --server-fingerprint: refuse trust on first use and --insecure-skip-verify."`

	Identity string `help:"The server's identity that --secret belongs to (a NAME of its --identities file); empty is the server's shared --secret." placeholder:"NAME"`

	SessionWait time.Duration `default:"10s" help:"How long a new application connection waits for the session while the server is unreachable (default ${default}; 0 means the default)."`

	Speedtest         bool          `help:"Measure the path to the server and exit: RTT, goodput and loss each way, with the loss-recovery layer (--fec) and without, and what it means. The server takes part only for a client that proves an identity (--secret or mutual TLS)."`
	SpeedtestDuration time.Duration `default:"5s" help:"How long --speedtest measures each direction in each run (default ${default}; the server may cut it shorter)."`

	cli.EndpointFlags
}

func vars() kong.Vars { return kong.Vars{"known_hosts": filepath.Join(cli.StateDir(), "known_hosts")} }

func main() {
	var f flags
	file := cli.Parse(&f, "quictun-client", "The client endpoint of quictun: a fast, secure TCP/UNIX-socket tunnel over QUIC.\n\n"+
		"Applications connect here; each connection becomes a tunnel to the server application the token names.\n"+
		"Example: quictun-client --listen-on tcp:127.0.0.1:6500 --server-endpoint 203.0.113.7:7500 --token-source tcp:10.0.0.5:22\n"+
		"Many forwards share one session: --forward tcp:127.0.0.1:6501=tcp:10.0.0.6:5432 (repeatable), [[forward]] tables in --config, "+
		"--socks-listen-on, --http-proxy-listen-on. SIGHUP re-reads the forwards of --config.",
		vars())
	log := f.Logger(os.Stderr)
	if err := run(f, file, log); err != nil {
		cli.Fatal(log, "quictun-client", err)
	}
}

func run(f flags, file *cli.Config, log *slog.Logger) error {
	if handled, err := f.ManageService("quictun-client"); handled {
		return err
	}
	if f.ServerEndpoint == "" { // not kong's required: --remove-service needs none
		return errors.New("missing flag --server-endpoint=HOST:PORT (or server-endpoint in --config)")
	}
	if err := address.ParseHostPort(f.ServerEndpoint); err != nil {
		return fmt.Errorf("%s: %w", file.Origin("server-endpoint"), err)
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
	if f.Identity != "" {
		if err := identity.ValidName(f.Identity); err != nil {
			return fmt.Errorf("%s: %w", file.Origin("identity"), err)
		}
		if secret == nil {
			return fmt.Errorf("%s: an identity needs its secret (--secret, --secret-file or QUICTUN_SECRET)", file.Origin("identity"))
		}
	}
	fec, err := recovery.ParseConfig(f.Fec)
	if err != nil {
		return fmt.Errorf("%s: %w", file.Origin("fec"), err)
	}
	if f.Speedtest {
		return speedTest(f, file, tlsConf, secret, fec, log)
	}
	reverses, err := reverseSpecs(f, file)
	if err != nil {
		return err
	}
	specs, err := forwardSpecs(f, file, len(reverses) > 0)
	if err != nil {
		return err
	}
	client, err := endpoints.NewClient(endpoints.ClientConfig{
		Recovery: &fec, Congestion: f.Congestion,
		Forwards: specs, Reverses: reverses, ServerEndpoint: f.ServerEndpoint, TLS: tlsConf, Secret: secret, Identity: f.Identity,
		Engine: engine.Config{Sniffers: sniff.Default(), DatagramSniffers: sniff.DefaultDatagram(), IdleTimeout: f.IdleTimeout,
			Flow: engine.FlowTimeouts{Unreplied: f.UdpTimeout, Replied: f.UdpRepliedTimeout}},
		SessionWait: f.SessionWait, DrainTimeout: f.DrainTimeout, Logger: log,
	})
	if err != nil {
		return err
	}
	warnOpenForwards(client, log)
	listen := ""
	if a := client.Addr(); a != nil {
		listen = a.Network() + ":" + a.String()
	}
	log.Info("quictun-client listening", "version", cli.Version(), "listen", listen, "forwards", len(specs), "reverse_forwards", len(reverses),
		"server", f.ServerEndpoint, "verify", opts.Mode(), "fec", f.Fec)
	ctx, stop := cli.SignalContext(log)
	defer stop()
	stopReload := cli.OnHangup(ctx, func() { reload(f, client, log) })
	defer stopReload()
	return file.Locate(cli.RunWithAPI(ctx, f.HttpdListenOn, f.HttpdToken, client, log))
}

// speedTest runs --speedtest and prints its table on standard output.
func speedTest(f flags, file *cli.Config, tlsConf *tls.Config, secret []byte, fec recovery.Config, log *slog.Logger) error {
	if f.SpeedtestDuration < 0 {
		return fmt.Errorf("%s: negative", file.Origin("speedtest-duration"))
	}
	ctx, stop := cli.SignalContext(log)
	defer stop()
	log.Info("speed test: two runs, with the loss-recovery layer and without", "server", f.ServerEndpoint, "each_way", f.SpeedtestDuration)
	res, err := endpoints.SpeedTest(ctx, endpoints.SpeedTestConfig{
		ServerEndpoint: f.ServerEndpoint, TLS: tlsConf, Secret: secret, Identity: f.Identity,
		Recovery: &fec, Congestion: f.Congestion, Duration: f.SpeedtestDuration, Logger: log,
	})
	if err != nil {
		return err
	}
	return res.WriteTable(os.Stdout)
}

// reload is SIGHUP: it reads the command line and --config again and makes
// the client's forwards and reverse forwards those they now name. A config that does not parse,
// or a forward that cannot start, refuses the whole reload: the running
// forwards stay as they were. Only forwards change; other settings take
// effect at the next start, which the log says when they differ.
func reload(running flags, client *endpoints.Client, log *slog.Logger) {
	var f flags
	file, err := cli.Reparse(&f, "quictun-client", vars())
	var reverses []endpoints.ReverseSpec
	if err == nil {
		reverses, err = reverseSpecs(f, file)
	}
	if err == nil {
		var specs []endpoints.ForwardSpec
		if specs, err = forwardSpecs(f, file, len(reverses) > 0); err == nil {
			err = client.SetForwards(specs)
		}
	}
	if err == nil {
		err = client.SetReverses(reverses) // checked whole by reverseSpecs: refused only by a bug
	}
	if err != nil {
		log.Error("reload refused: the running forwards stay as they were", "err", err)
		return
	}
	log.Info("reloaded", "forwards", len(client.Forwards()), "reverse_forwards", len(client.Reverses()))
	warnOpenForwards(client, log)
	if changed := otherChanges(running, f); len(changed) > 0 {
		log.Warn("reload changes only forwards; these take effect at the next start", "changed", strings.Join(changed, ", "))
	}
}

// warnOpenForwards warns of every forward that other hosts can reach.
func warnOpenForwards(client *endpoints.Client, log *slog.Logger) {
	for _, fw := range client.Forwards() {
		if addr := client.ForwardAddr(fw.Name); addr != nil {
			cli.WarnOpenListener(log, fw.Name, addr)
		}
	}
}

// otherChanges names the settings besides forwards that differ.
func otherChanges(a, b flags) []string {
	for _, f := range []*flags{&a, &b} {
		f.Config, f.ListenOn, f.TokenSourcePlugin, f.TokenSource, f.TokenSourceTimeout = "", "", "", "", 0
		f.Reverse = nil
		f.Forward, f.SocksListenOn, f.HttpProxyListenOn, f.ProxyUsername, f.ProxyPassword = nil, "", "", "", ""
	}
	var out []string
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	for i := range va.NumField() {
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			out = append(out, va.Type().Field(i).Name)
		}
	}
	return out
}
