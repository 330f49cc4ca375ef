package sniff

import (
	"strings"
	"testing"
)

// BenchmarkSniff measures each fixture two ways, to be read as ratios against the
// baseline in the same run:
//
//   - baseline/pump-chunk-32KiB: copying one 32 KiB buffer, the unit of work of a tunnel
//     pump on the data path;
//   - FIXTURE/once: one Sniff call by the matching sniffer on the bytes the engine had
//     handed over when that sniffer was done (the engine's last call);
//   - FIXTURE/replay: the whole classification as the engine runs it, every sniffer after
//     every chunk until one is done, including collecting the chunks.
func BenchmarkSniff(b *testing.B) {
	b.Run("baseline/pump-chunk-32KiB", func(b *testing.B) {
		src, dst := make([]byte, 32<<10), make([]byte, 32<<10)
		b.SetBytes(int64(len(src)))
		for b.Loop() {
			copy(dst, src)
		}
	})
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
