package engine

import "sync"

// BufferSize is the size of each pump's buffer. A pump reads at most this much
// per call and writes it straight on, so it bounds a tunnel's own memory at
// 2 x BufferSize (plus the sniffer's capture while it runs); quic-go's stream
// receive window is separate and set by the endpoint's QUIC config.
const BufferSize = 32 << 10

var bufferPool = sync.Pool{New: func() any {
	b := make([]byte, BufferSize)
	return &b
}}

func getBuffer() *[]byte  { return bufferPool.Get().(*[]byte) }
func putBuffer(b *[]byte) { bufferPool.Put(b) }
