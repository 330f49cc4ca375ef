# A UDP relay that records datagrams for the sniffer fixtures (see README.md):
# record-udp.py LISTEN-PORT TARGET-PORT FILE SECONDS listens on LISTEN-PORT (any
# address), forwards each datagram to 127.0.0.1:TARGET-PORT and the answers back, and
# writes the first 16 in the quictun-capture v1 format, one record a datagram.
import socket, sys, struct, select, time
lport, tport, out, secs = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
ls = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); ls.bind(("0.0.0.0", lport))
ts = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); ts.bind(("127.0.0.1", 0)); ts.connect(("127.0.0.1", tport))
client = None; recs = []; end = time.time() + secs
while time.time() < end:
    r, _, _ = select.select([ls, ts], [], [], 0.2)
    for s in r:
        if s is ls:
            d, client = ls.recvfrom(65535); recs.append((b'c', d)); ts.send(d)
        else:
            d = ts.recv(65535); recs.append((b's', d))
            if client: ls.sendto(d, client)
with open(out, "wb") as f:
    f.write(b"quictun-capture v1\n")
    for dir, d in recs[:16]:
        f.write(dir + struct.pack(">I", len(d)) + d)
print(len(recs), [len(d) for _, d in recs[:16]])
