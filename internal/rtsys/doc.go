// Package rtsys has the system calls of the link emulator's real-time threads. They
// are raw: the calling goroutine keeps its P (Go's right to run Go code) while it
// blocks in the kernel. Through the runtime's ordinary path a thread that wakes from a
// syscall must win a P back first, and on this 2-core machine that took up to 177 ms
// while the kernel had woken the thread on time; the emulator reserves a P for each of
// its threads (see netem/host), so holding one costs nothing else.
//
// Only for locked threads that block briefly or can be interrupted: the runtime's
// preemption signal ends a blocking Ppoll with EINTR, so the garbage collector never
// waits on one for long.
package rtsys
