package recovery

import (
	"net"
	"sync"
	"time"
)

// maxStrangers bounds the strangers a Conn keeps state for; a new one takes the
// place of the oldest. Their state is a few hundred bytes each (see Conn).
const maxStrangers = 256

// peerTable holds the peers of a Conn: at most Config.MaxPeers proven ones, and
// at most maxStrangers strangers, the oldest of which makes room for a new one,
// so that a flood of strangers from many addresses neither grows the table nor
// keeps a real client from starting.
type peerTable struct {
	mu        sync.RWMutex
	m         map[peerKey]*peer
	proven    int
	strangers [maxStrangers]*peer // a ring, by arrival; entries may be stale
	next      int
	// proofs counts the live proofs of each address (Conn.Prove).
	proofs map[peerKey]int
}

// lookup returns the peer for addr, creating it (unless origin is noCreate):
// proven if an endpoint proved the address or, with Config.Dialer, it is ours to
// write to. It returns nil when there is no peer.
func (t *peerTable) lookup(c *Conn, key peerKey, addr net.Addr, origin peerOrigin, now time.Duration) *peer {
	t.mu.RLock()
	p := t.m[key]
	t.mu.RUnlock()
	if p != nil || origin == noCreate {
		return p
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if p := t.m[key]; p != nil {
		return p
	}
	if t.proofs[key] > 0 || (origin == weSpoke && c.cfg.Dialer) {
		return t.addProvenLocked(c, newPeer(c, key, addr, true, now), now)
	}
	return t.addStrangerLocked(c, newPeer(c, key, addr, false, now))
}

// addProvenLocked adds p unless the table holds MaxPeers proven peers none of
// which has been idle for peerEvictAfter.
func (t *peerTable) addProvenLocked(c *Conn, p *peer, now time.Duration) *peer {
	if t.proven >= c.cfg.MaxPeers {
		var oldest *peer
		for _, q := range t.m {
			if q.proven() && (oldest == nil || q.lastActive.Load() < oldest.lastActive.Load()) {
				oldest = q
			}
		}
		if oldest == nil || now-time.Duration(oldest.lastActive.Load()) < peerEvictAfter {
			return nil
		}
		t.removeLocked(c, oldest)
	}
	t.m[p.key] = p
	t.proven++
	c.flusher.wake(now + min(idleCheck, c.cfg.PeerIdle/2)) // so it is forgotten if it stays idle
	return p
}

func (t *peerTable) addStrangerLocked(c *Conn, p *peer) *peer {
	if old := t.strangers[t.next]; old != nil && t.m[old.key] == old {
		delete(t.m, old.key)
	}
	t.strangers[t.next] = p
	t.next = (t.next + 1) % maxStrangers
	t.m[p.key] = p
	return p
}

// removeLocked drops p from the table and frees what it holds.
func (t *peerTable) removeLocked(c *Conn, p *peer) {
	if t.m[p.key] != p {
		return
	}
	delete(t.m, p.key)
	if p.proven() {
		t.proven--
		c.retirePeer(p)
	}
}

// prove records a proof of key and makes its peer a proven one.
func (t *peerTable) prove(c *Conn, key peerKey, addr net.Addr, now time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.proofs[key]++
	p := t.m[key]
	switch {
	case p == nil:
		t.addProvenLocked(c, newPeer(c, key, addr, true, now), now)
	case !p.proven():
		delete(t.m, key)
		if t.addProvenLocked(c, promoted(c, p, now), now) == nil {
			t.m[key] = p // no room: it stays a stranger
		}
	}
}

// unprove ends one proof of key; after the last, its peer is forgotten (the
// next datagram from it makes a stranger).
func (t *peerTable) unprove(c *Conn, key peerKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.proofs[key]--; t.proofs[key] > 0 {
		return
	}
	delete(t.proofs, key)
	if p := t.m[key]; p != nil && p.proven() {
		t.removeLocked(c, p)
	}
}

// promote makes stranger p a proven peer (Config.Dialer: we write to it).
func (t *peerTable) promote(c *Conn, p *peer, now time.Duration) *peer {
	t.mu.Lock()
	defer t.mu.Unlock()
	if q := t.m[p.key]; q != p {
		if q != nil {
			return q
		}
		return p
	}
	delete(t.m, p.key)
	if q := t.addProvenLocked(c, promoted(c, p, now), now); q != nil {
		return q
	}
	t.m[p.key] = p
	return p
}

// peerEvictAfter is how idle a proven peer must be before a new one may take its
// place in a full table.
const peerEvictAfter = 5 * time.Second

// snapshot returns the peers, for the flusher and Stats.
func (t *peerTable) snapshot(dst []*peer) []*peer {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, p := range t.m {
		dst = append(dst, p)
	}
	return dst
}

// remove drops p from the table (if it is still there) and frees its buffers.
func (t *peerTable) remove(c *Conn, p *peer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.removeLocked(c, p)
}
