package cli

import "time"

// EndpointFlags are the flags both endpoints have, beyond their own.
type EndpointFlags struct {
	IdleTimeout time.Duration `default:"0s" help:"Close a tunnel that carried no byte for this long (default 0: never)."`
	// conntrack's nf_conntrack_udp_timeout and nf_conntrack_udp_timeout_stream.
	UdpTimeout        time.Duration `default:"30s" help:"End a UDP flow that the server application never answered after this long without a datagram (default ${default}, as conntrack)."`
	UdpRepliedTimeout time.Duration `default:"120s" help:"End a UDP flow that was answered after this long without a datagram (default ${default}, as conntrack)."`
	Secret

	Congestion string `default:"bbr" enum:"bbr,reno" help:"Congestion controller of what this endpoint sends: bbr (paces at the measured delivery rate, keeps about two bandwidth-delay products in flight, takes no loss for congestion) or reno (quic-go's own: halves on each loss; fairer to TCP on a shared bottleneck, slow on long lossy paths); default ${default}."`

	Fec string `default:"auto" help:"Loss-recovery layer under QUIC: auto (repairs adapted to the measured loss), off (plain QUIC), or K,M (a fixed M repair datagrams per K data datagrams, e.g. 10,3); default ${default}." placeholder:"auto|off|K,M"`

	HttpdListenOn string        `help:"Serve the REST API (GET /tunnels, /sessions, /metrics ...) and the live dashboard (GET /) on this TCP address; off when empty. Keep it on loopback." placeholder:"HOST:PORT"`
	HttpdToken    string        `help:"Require \"Authorization: Bearer TOKEN\" on every API request but /healthz." env:"QUICTUN_HTTPD_TOKEN" placeholder:"TOKEN" sensitive:""`
	DrainTimeout  time.Duration `default:"10s" help:"On SIGINT/SIGTERM, how long live tunnels may finish before they are closed (default ${default}; 0 means the default)."`

	Logging
	Service
}
