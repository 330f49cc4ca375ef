package bench

// The flow over a reverse forward (issue 19): quictun's, and OpenSSH's ssh -R with
// cubic or bbr on its one TCP connection. They run in the reverse suite; a suite that
// names no contenders leaves them out.
const (
	QuictunReverse  = "quictun-reverse"
	SSHReverseCubic = "ssh-reverse-cubic"
	SSHReverseBBR   = "ssh-reverse-bbr"
)

var reverseContenders = []string{QuictunReverse, SSHReverseCubic, SSHReverseBBR}

func init() { Contenders = append(Contenders, reverseContenders...) }
