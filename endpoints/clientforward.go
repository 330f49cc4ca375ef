package endpoints

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/quictun/quictun/endpoints/address"
	"github.com/quictun/quictun/endpoints/token"
	"github.com/quictun/quictun/engine"
)

// A client endpoint carries many forwards over its one warm session. A forward
// is a listener for applications and a rule for where their tunnels go: a
// token source (every connection to the same place, or a lookup), or a proxy
// protocol in which each application names its own target (SOCKS5, HTTP).
// Forwards come and go while the client runs (a reload, the API): an added one
// starts accepting, a removed one stops accepting and lets its live tunnels
// drain as on shutdown, a changed one is removed and added.

// DefaultForward is the name of the forward that ClientConfig.ListenOn and
// Tokens make (the one-forward shortcut of the command line).
const DefaultForward = "default"

// maxForwardName bounds a forward's name: it shows in logs, metrics labels
// and the API's paths. A listen address, the default name, fits.
const maxForwardName = 128

// Proxy protocols a forward can speak instead of using a token source.
const (
	ProxySOCKS5 = "socks5"
	ProxyHTTP   = "http"
)

// ForwardSpec is one forward as configuration: strings and numbers only, so
// that a reload tells an unchanged forward from a changed one with ==.
type ForwardSpec struct {
	// Name identifies the forward in logs, metrics and the API; unique within
	// a client. Empty means the listen address as written.
	Name string `json:"name"`
	// ListenOn is where applications connect: tcp:HOST:PORT or unix:PATH.
	ListenOn string `json:"listenOn"`
	// Proxy, when set, makes the forward a proxy (ProxySOCKS5 or ProxyHTTP):
	// each application names its own target, which travels as the token, and
	// the server's policy decides. Token sources are then not used.
	Proxy string `json:"proxy,omitempty"`
	// TokenSourcePlugin and TokenSource make the forward's token source, as
	// token.NewSource does (default plugin Fixed).
	TokenSourcePlugin  string        `json:"tokenSourcePlugin,omitempty"`
	TokenSource        string        `json:"tokenSource,omitempty"`
	TokenSourceTimeout time.Duration `json:"tokenSourceTimeout,omitempty"`
	// Username and Password, when set, are what a proxy's applications must
	// present (RFC 1929 for SOCKS5, Proxy-Authorization Basic for HTTP).
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
}

// Named is the spec with its default name (the listen address) filled in.
func (s ForwardSpec) Named() ForwardSpec {
	if s.Name == "" {
		s.Name = s.ListenOn
	}
	return s
}

// checkForwardName refuses names that would not read well in a log line or
// an API path.
func checkForwardName(name string) error {
	if name == "" || len(name) > maxForwardName {
		return fmt.Errorf("forward name must have 1 to %d bytes", maxForwardName)
	}
	for _, r := range name {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune(`?#%"\`, r) {
			return fmt.Errorf("forward name %q: only printable ASCII without spaces, ?, #, %%, \" or \\", name)
		}
	}
	return nil
}

// Check validates the spec as a client would before it starts the forward.
func (s ForwardSpec) Check() error {
	_, err := s.prepare(nil)
	return err
}

// prepare validates a spec and makes its forward, unbound; log gets its
// token source's warnings.
func (s ForwardSpec) prepare(log *slog.Logger) (*forward, error) {
	s = s.Named()
	if err := checkForwardName(s.Name); err != nil {
		return nil, err
	}
	fail := func(err error) (*forward, error) { return nil, fmt.Errorf("forward %s: %w", s.Name, err) }
	listen, err := address.ParseListen(s.ListenOn)
	if err != nil {
		return fail(err)
	}
	f := &forward{spec: s, fromSpec: true, name: s.Name, listen: listen, proxy: s.Proxy}
	switch s.Proxy {
	case "":
		if s.Username != "" || s.Password != "" {
			return fail(errors.New("username and password are for proxies (proxy = socks5 or http)"))
		}
		plugin := s.TokenSourcePlugin
		if plugin == "" {
			plugin = "Fixed"
		}
		if f.tokens, err = token.NewSource(plugin, s.TokenSource, token.SourceOptions{Timeout: s.TokenSourceTimeout, Logger: log}); err != nil {
			return fail(err)
		}
	case ProxySOCKS5, ProxyHTTP:
		if listen.Network == address.UDP {
			return fail(errors.New("a proxy listens on tcp: or unix:, not udp:"))
		}
		if s.TokenSourcePlugin != "" || s.TokenSource != "" {
			return fail(errors.New("a proxy takes its targets from the applications: give no token source"))
		}
		if (s.Username == "") != (s.Password == "") {
			return fail(errors.New("give both username and password, or neither"))
		}
		if len(s.Username) > 255 || len(s.Password) > 255 {
			return fail(errors.New("username and password have at most 255 bytes each (RFC 1929)"))
		}
	default:
		return fail(fmt.Errorf("unknown proxy %q (want %s or %s)", s.Proxy, ProxySOCKS5, ProxyHTTP))
	}
	return f, nil
}

// forward is one running forward: its listener, its accept loop, the
// handlers of its application connections, and its counters.
type forward struct {
	spec     ForwardSpec
	fromSpec bool // made from spec (else from ClientConfig's Go values, which a spec cannot equal)
	byAPI    bool // added through AddForward: SetForwards (a reload) leaves it alone
	name     string
	listen   address.Address
	tokens   token.Source // nil for a proxy
	proxy    string
	ln       net.Listener    // bound by bind (nil for a UDP forward)
	udp      *udpForward     // a UDP forward's socket and flows, bound by bind
	bound    address.Address // listen with the port that bind got
	stats    *forwardStats
	// associations is a SOCKS5 proxy's UDP associations open now.
	associations atomic.Int64

	// Set by start: ctx bounds accepting and tunnel set-up (retire and
	// shutdown cancel it), tunnels bounds the tunnels themselves.
	ctx         context.Context
	cancel      context.CancelFunc
	tunnels     context.Context
	stopTunnels context.CancelCauseFunc
	accepted    chan struct{} // closed when the accept loop has ended
	handlers    sync.WaitGroup
	closeOnce   sync.Once
}

func (f *forward) bind() error {
	if f.listen.Network == address.UDP {
		return f.bindUDP()
	}
	ln, err := f.listen.Listen()
	if err != nil {
		return fmt.Errorf("forward %s: %w", f.name, err)
	}
	f.ln = ln
	f.bound = f.listen
	if f.listen.Network == address.TCP {
		f.bound.Addr = ln.Addr().String()
	}
	return nil
}

// closeListener stops new connections at once (synchronously, so that the
// address can be bound again right after).
func (f *forward) closeListener() {
	f.closeOnce.Do(func() {
		if f.udp != nil {
			f.udp.pc.Close()
			return
		}
		f.ln.Close()
	})
}

// forwardStats are one forward's counters, kept across a change of the
// forward (a restart with a new spec) and dropped with its removal.
type forwardStats struct {
	opened     atomic.Uint64
	closedUp   atomic.Uint64 // bytes of its tunnels that have ended
	closedDown atomic.Uint64
	failures   struct {
		sync.Mutex
		byReason map[string]uint64
	}
}

func newForwardStats() *forwardStats {
	s := &forwardStats{}
	s.failures.byReason = map[string]uint64{}
	return s
}

func (s *forwardStats) failed(reason string) {
	s.failures.Lock()
	s.failures.byReason[reason]++
	s.failures.Unlock()
}

func (s *forwardStats) failuresByReason() map[string]uint64 {
	s.failures.Lock()
	defer s.failures.Unlock()
	out := make(map[string]uint64, len(s.failures.byReason))
	for k, v := range s.failures.byReason {
		out[k] = v
	}
	return out
}

// forwardError is an error of a forward change that the API answers with
// its own HTTP status.
type forwardError struct {
	msg    string
	status int
}

func (e *forwardError) Error() string   { return e.msg }
func (e *forwardError) HTTPStatus() int { return e.status }

var (
	// ErrNoForward is a forward name the client does not have.
	ErrNoForward error = &forwardError{"no such forward", 404}
	// ErrForwardExists is a forward name the client has already.
	ErrForwardExists error = &forwardError{"a forward of that name exists", 409}
	// ErrClientStopped is a change asked of a client that has stopped.
	ErrClientStopped error = &forwardError{"client endpoint has stopped", 503}
)

// forwardSet is the client's forwards and what starting one needs.
type forwardSet struct {
	sync.Mutex
	live    map[string]*forward
	order   []string // names in the order they were added, for listings
	running bool     // Run has started: added forwards start at once
	stopped bool     // Run is shutting down: no change is taken
	tunnels context.Context
	parent  context.Context // Run's ctx: forwards' accept contexts derive from it
}

// SetForwards makes the client's forwards those of specs: added ones start,
// removed ones stop accepting and drain (see retire), changed ones restart,
// unchanged ones are not touched. It is all or nothing: a spec that does not
// validate or an address that cannot be bound refuses the whole change, and
// the forwards stay as they were. The forward made from ClientConfig.ListenOn
// and Tokens counts as changed when specs name it, and is removed otherwise.
// Forwards added by AddForward (the API) are not the config's: they stay
// unless specs name them.
func (c *Client) SetForwards(specs []ForwardSpec) error {
	want := map[string]ForwardSpec{}
	for _, s := range specs {
		s = s.Named()
		if _, dup := want[s.Name]; dup {
			return fmt.Errorf("forward %s: %w", s.Name, ErrForwardExists)
		}
		want[s.Name] = s
	}
	c.forwards.Lock()
	defer c.forwards.Unlock()
	var remove []string
	var add []ForwardSpec
	for _, name := range c.forwards.order {
		f := c.forwards.live[name]
		s, kept := want[name]
		if !kept && f.byAPI {
			continue
		}
		if !kept || !f.fromSpec || f.byAPI || f.spec != s {
			remove = append(remove, name)
		}
	}
	for _, s := range specs {
		s = s.Named()
		if f, ok := c.forwards.live[s.Name]; !ok || slices.Contains(remove, f.name) {
			add = append(add, s)
		}
	}
	return c.change(remove, add, false)
}

// AddForward adds one forward and starts it. A later SetForwards (a reload)
// leaves it alone unless its specs name it.
func (c *Client) AddForward(spec ForwardSpec) error {
	spec = spec.Named()
	c.forwards.Lock()
	defer c.forwards.Unlock()
	if _, ok := c.forwards.live[spec.Name]; ok {
		return fmt.Errorf("forward %s: %w", spec.Name, ErrForwardExists)
	}
	return c.change(nil, []ForwardSpec{spec}, true)
}

// RemoveForward stops a forward: it accepts no more, and its live tunnels
// drain for DrainTimeout.
func (c *Client) RemoveForward(name string) error {
	c.forwards.Lock()
	defer c.forwards.Unlock()
	if _, ok := c.forwards.live[name]; !ok {
		return fmt.Errorf("forward %s: %w", name, ErrNoForward)
	}
	return c.change([]string{name}, nil, false)
}

// change retires the forwards named in remove and starts those of add. The
// caller holds c.forwards. Everything that can fail is done before anything
// is stopped, except binding an address that a removed forward holds: that one
// is bound after its holder let go, and a failure there (another process took
// the address in between) is reported, with the rest of the change done.
func (c *Client) change(remove []string, add []ForwardSpec, byAPI bool) error {
	if c.forwards.stopped {
		return ErrClientStopped
	}
	freed := map[address.Address]bool{}
	for _, name := range remove {
		freed[c.forwards.live[name].bound] = true
	}
	var fresh, later []*forward
	undo := func() {
		for _, f := range fresh {
			f.closeListener()
		}
	}
	for _, s := range add {
		f, err := s.prepare(c.log.With("forward", s.Named().Name))
		if err != nil {
			undo()
			return err
		}
		f.byAPI = byAPI
		if freed[f.listen] {
			later = append(later, f)
			continue
		}
		if err := f.bind(); err != nil {
			undo()
			return err
		}
		fresh = append(fresh, f)
	}
	stats := map[string]*forwardStats{}
	for _, name := range remove {
		f := c.forwards.live[name]
		stats[name] = f.stats
		delete(c.forwards.live, name)
		c.forwards.order = slices.DeleteFunc(c.forwards.order, func(n string) bool { return n == name })
		c.retire(f)
	}
	var errs []error
	for _, f := range later {
		if err := f.bind(); err != nil {
			c.log.Error("forward not restarted: its address could not be bound again", "forward", f.name, "err", err)
			errs = append(errs, err)
			continue
		}
		fresh = append(fresh, f)
	}
	for _, f := range fresh {
		f.stats = stats[f.name]
		if f.stats == nil {
			f.stats = newForwardStats()
		}
		c.forwards.live[f.name] = f
		c.forwards.order = append(c.forwards.order, f.name)
		if c.forwards.running {
			c.start(f)
		}
	}
	return errors.Join(errs...)
}

// start runs a bound forward's accept loop. The caller holds c.forwards, with
// running set.
func (c *Client) start(f *forward) {
	f.ctx, f.cancel = context.WithCancel(c.forwards.parent)
	f.tunnels, f.stopTunnels = context.WithCancelCause(c.forwards.tunnels)
	f.accepted = make(chan struct{})
	c.log.Info("forward accepting", "forward", f.name, "listen", f.listen.Network+":"+f.addr().String(), "proxy", f.proxy)
	if f.udp != nil {
		c.accepters.Go(func() { c.receiveApps(f) })
		return
	}
	c.accepters.Go(func() { c.acceptApps(f) })
}

// retire stops a forward: it accepts no more at once; its live tunnels get
// DrainTimeout to finish, then the rest are closed. The caller holds
// c.forwards. Shutdown, if it comes meanwhile, closes them sooner.
func (c *Client) retire(f *forward) {
	f.closeListener()
	if f.cancel == nil { // never started
		return
	}
	f.cancel()
	c.log.Info("forward stopped accepting: draining its tunnels", "forward", f.name, "for", c.cfg.DrainTimeout)
	c.retirers.Go(func() { c.drainForward(f) })
}

// drainForward is a retired forward's last routine: it waits for the accept
// loop, then for its tunnels up to DrainTimeout, closes those left, and
// waits for them.
func (c *Client) drainForward(f *forward) {
	<-f.accepted
	idle := make(chan struct{})
	go func() { f.handlers.Wait(); close(idle) }()
	timer := time.NewTimer(c.cfg.DrainTimeout)
	defer timer.Stop()
	select {
	case <-idle:
	case <-timer.C:
		f.stopTunnels(errRetired)
		<-idle
	}
	f.stopTunnels(nil)
	c.log.Info("forward stopped", "forward", f.name)
}

// errRetired is the end of a tunnel whose forward was removed and whose drain
// time ran out: a shutdown, for the tunnel.
var errRetired = fmt.Errorf("forward removed: %w", engine.ErrShutdown)

// acceptApps is a forward's accept loop: it ends when the forward's ctx does.
func (c *Client) acceptApps(f *forward) {
	defer close(f.accepted)
	stop := context.AfterFunc(f.ctx, f.closeListener)
	defer stop()
	var backoff time.Duration
	for {
		app, err := f.ln.Accept()
		if err != nil {
			if f.ctx.Err() != nil {
				return
			}
			// Out of file descriptors and the like: back off rather than spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			c.log.Error("accept application connection", "forward", f.name, "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
				continue
			case <-f.ctx.Done():
			}
			return
		}
		backoff = 0
		f.handlers.Go(func() { c.serveApp(f, app) })
	}
}

// ForwardStatus is one forward as the API shows it.
type ForwardStatus struct {
	Name     string `json:"name"`
	ListenOn string `json:"listenOn"` // the bound address (a port 0 resolved)
	Proxy    string `json:"proxy,omitempty"`
	// Target is the Fixed token source's address; empty for other sources
	// (a token may be a credential) and for proxies.
	Target            string `json:"target,omitempty"`
	TokenSourcePlugin string `json:"tokenSourcePlugin,omitempty"`
	// Origin says who added the forward: "config" (the command line and
	// its file, or ClientConfig) or "api".
	Origin        string            `json:"origin"`
	TunnelsOpen   int               `json:"tunnelsOpen"`
	TunnelsOpened uint64            `json:"tunnelsOpened"`
	BytesUp       uint64            `json:"bytesUp"`
	BytesDown     uint64            `json:"bytesDown"`
	Failures      map[string]uint64 `json:"failures"`
}

// Forwards lists the client's forwards in the order they were added.
func (c *Client) Forwards() []ForwardStatus {
	c.forwards.Lock()
	fs := make([]*forward, 0, len(c.forwards.order))
	for _, name := range c.forwards.order {
		fs = append(fs, c.forwards.live[name])
	}
	c.forwards.Unlock()
	live := c.liveByForward()
	out := make([]ForwardStatus, 0, len(fs))
	for _, f := range fs {
		l := live[f.name]
		st := ForwardStatus{
			Name: f.name, ListenOn: f.listen.Network + ":" + f.addr().String(), Proxy: f.proxy,
			TunnelsOpen: l.open, TunnelsOpened: f.stats.opened.Load(),
			BytesUp: f.stats.closedUp.Load() + l.up, BytesDown: f.stats.closedDown.Load() + l.down,
			Failures: f.stats.failuresByReason(), Origin: "config",
		}
		if f.byAPI {
			st.Origin = "api"
		}
		if f.fromSpec && f.proxy == "" {
			st.TokenSourcePlugin = f.spec.TokenSourcePlugin
			if st.TokenSourcePlugin == "" {
				st.TokenSourcePlugin = "Fixed"
			}
			if strings.EqualFold(st.TokenSourcePlugin, "Fixed") {
				st.Target = displayTarget(f.spec.TokenSource)
			}
		}
		out = append(out, st)
	}
	return out
}

// ForwardAddr is where a forward's applications connect; nil when the client
// has no forward of that name.
func (c *Client) ForwardAddr(name string) net.Addr {
	c.forwards.Lock()
	defer c.forwards.Unlock()
	if f, ok := c.forwards.live[name]; ok {
		return f.addr()
	}
	return nil
}

// liveCount is what the live tunnels of one forward carry now.
type liveCount struct {
	open     int
	up, down uint64
}

func (c *Client) liveByForward() map[string]liveCount {
	out := map[string]liveCount{}
	for _, t := range c.reg.Tunnels() {
		l := out[t.Info.Forward]
		l.open++
		l.up += t.BytesUp()
		l.down += t.BytesDown()
		out[t.Info.Forward] = l
	}
	return out
}

// forwardCollector is the client's per-forward metrics, read at scrape time
// like the rest (see metrics).
type forwardCollector struct{ client *Client }

var (
	forwardOpenDesc = prometheus.NewDesc("quictun_forward_tunnels_open", "Tunnels open now, by forward.",
		[]string{"forward"}, prometheus.Labels{"endpoint": string(engine.ClientEndpoint)})
	forwardOpenedDesc = prometheus.NewDesc("quictun_forward_tunnels_opened_total", "Tunnels opened since the forward started, by forward.",
		[]string{"forward"}, prometheus.Labels{"endpoint": string(engine.ClientEndpoint)})
	forwardBytesDesc = prometheus.NewDesc("quictun_forward_bytes_total", "Application bytes carried, by forward and direction (up: client app to server app).",
		[]string{"forward", "direction"}, prometheus.Labels{"endpoint": string(engine.ClientEndpoint)})
	forwardFailuresDesc = prometheus.NewDesc("quictun_forward_failures_total", "Tunnels that failed to start, by forward and reason.",
		[]string{"forward", "reason"}, prometheus.Labels{"endpoint": string(engine.ClientEndpoint)})
)

func (fc *forwardCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- forwardOpenDesc
	ch <- forwardOpenedDesc
	ch <- forwardBytesDesc
	ch <- forwardFailuresDesc
}

func (fc *forwardCollector) Collect(ch chan<- prometheus.Metric) {
	for _, f := range fc.client.Forwards() {
		ch <- prometheus.MustNewConstMetric(forwardOpenDesc, prometheus.GaugeValue, float64(f.TunnelsOpen), f.Name)
		ch <- prometheus.MustNewConstMetric(forwardOpenedDesc, prometheus.CounterValue, float64(f.TunnelsOpened), f.Name)
		ch <- prometheus.MustNewConstMetric(forwardBytesDesc, prometheus.CounterValue, float64(f.BytesUp), f.Name, "up")
		ch <- prometheus.MustNewConstMetric(forwardBytesDesc, prometheus.CounterValue, float64(f.BytesDown), f.Name, "down")
		for reason, n := range f.Failures {
			ch <- prometheus.MustNewConstMetric(forwardFailuresDesc, prometheus.CounterValue, float64(n), f.Name, reason)
		}
	}
}

// forwardJSON is a forward as the API's POST /forwards takes it.
type forwardJSON struct {
	Name               string `json:"name"`
	ListenOn           string `json:"listenOn"`
	Proxy              string `json:"proxy"`
	TokenSourcePlugin  string `json:"tokenSourcePlugin"`
	TokenSource        string `json:"tokenSource"`
	TokenSourceTimeout string `json:"tokenSourceTimeout"` // a duration, "5s"
	Username           string `json:"username"`
	Password           string `json:"password"`
}

// ListForwards is GET /forwards.
func (c *Client) ListForwards() any {
	out := []any{}
	for _, f := range c.Forwards() {
		out = append(out, f)
	}
	for _, r := range c.reverseStatuses() {
		out = append(out, r)
	}
	return out
}

// AddForwardJSON is POST /forwards: the body is one forward (forwardJSON,
// unknown fields refused).
func (c *Client) AddForwardJSON(body []byte) (any, error) {
	var j forwardJSON
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return nil, fmt.Errorf("forward: %w", err)
	}
	if j.ListenOn == "" {
		return nil, errors.New("forward: listenOn is missing")
	}
	s := ForwardSpec{Name: j.Name, ListenOn: j.ListenOn, Proxy: j.Proxy, TokenSourcePlugin: j.TokenSourcePlugin,
		TokenSource: j.TokenSource, Username: j.Username, Password: j.Password}
	if j.TokenSourceTimeout != "" {
		d, err := time.ParseDuration(j.TokenSourceTimeout)
		if err != nil || d < 0 {
			return nil, fmt.Errorf("forward: tokenSourceTimeout %q: want a duration like \"5s\"", j.TokenSourceTimeout)
		}
		s.TokenSourceTimeout = d
	}
	if err := c.AddForward(s); err != nil {
		return nil, err
	}
	c.log.Info("forward added through the API", "forward", s.Named().Name)
	for _, f := range c.Forwards() {
		if f.Name == s.Named().Name {
			return f, nil
		}
	}
	return nil, fmt.Errorf("forward %s: %w", s.Named().Name, ErrNoForward) // removed in between
}
