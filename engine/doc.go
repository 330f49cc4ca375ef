// Package engine runs tunnels as supervised actors: two pumps (one per
// direction, each with one pooled buffer), a sniffer tap that classifies the
// protocol from copies and never blocks them, and the registry that the REST
// API and the metrics read (docs/DESIGN.md, "A tunnel as actors").
package engine
