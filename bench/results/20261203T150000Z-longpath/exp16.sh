#!/bin/bash
# issue 16: trainer and stream window at RTT 200 ms, BBR
cd /work/main/recovery
for round in 1 2; do
for v in "" "-goodput.notrain" "-goodput.streamwindow 16" "-goodput.notrain -goodput.streamwindow 16"; do
  for l in rtt200-loss1 rtt200-loss5; do
    echo "== round $round $l [$v]"
    flock /tmp/quictun-bench.lock /tmp/recovery.test -test.run '^$' -test.bench "HostGoodput/^$l$/^auto$" -test.benchtime 1x -goodput.duration 15s $v 2>&1 | grep -E "goodput_test|FAIL"
  done
done
done
