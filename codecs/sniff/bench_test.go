package sniff

import (
	"strings"
	"testing"
)

// BenchmarkSniff measures each fixture three ways, to be read as ratios within one run:
//
//   - copy: appending the bytes the engine had handed over when the sniffer was done, the
//     copy the engine's tap makes anyway (the baseline);
//   - once: one Sniff call by the matching sniffer on those bytes (the engine's last call);
//   - replay: the whole classification as the engine runs it, every sniffer after every
//     chunk until one is done.
func BenchmarkSniff(b *testing.B) {
	for _, tc := range fixtureCases {
		c := loadCapture(b, "testdata/"+tc.file)
		o := replay(nil, Default(), c)
		fromClient, fromServer := c.streams()
		fromClient, fromServer = fromClient[:o.clientLen], fromServer[:o.serverLen]
		var s Sniffer
		for _, d := range Default() {
			if d.Name() == tc.protocol {
				s = d
			}
		}
		name := strings.TrimSuffix(tc.file, ".cap")
		size := int64(len(fromClient) + len(fromServer))
		b.Run(name+"/copy", func(b *testing.B) {
			b.SetBytes(size)
			buf := make([]byte, 0, size)
			for b.Loop() {
				buf = append(append(buf[:0], fromClient...), fromServer...)
			}
		})
		b.Run(name+"/once", func(b *testing.B) {
			b.SetBytes(size)
			b.ReportAllocs()
			for b.Loop() {
				if r := s.Sniff(fromClient, fromServer); !r.Done {
					b.Fatal("not done")
				}
			}
		})
		b.Run(name+"/replay", func(b *testing.B) {
			b.SetBytes(size)
			b.ReportAllocs()
			for b.Loop() {
				if o := replay(nil, Default(), c); !o.result.Done {
					b.Fatal("not done")
				}
			}
		})
	}
}
