# The soak run's windows as one PNG (benches/soak/soak.py runs it):
#   gnuplot -e "tsv='target/soak/windows.tsv'; png='target/soak/soak.png'" benches/soak/soak.gp
set terminal pngcairo size 1000,900 font ",10"
set output png
set datafile separator "\t"
set key top left
set grid
set xlabel "seconds into the run"
set multiplot layout 3,1 title "jwtgate soak: 10 s windows"
set ylabel "latency (ms)"
set logscale y
plot tsv using 1:5 skip 1 with lines lw 2 title "p50", \
     tsv using 1:6 skip 1 with lines lw 2 title "p99"
unset logscale y
set ylabel "requests per window"
set yrange [0:*]
plot tsv using 1:2 skip 1 with lines lw 2 title "ok", \
     tsv using 1:3 skip 1 with impulses lw 3 title "failed (valid requests)", \
     tsv using 1:4 skip 1 with impulses lw 3 title "during upstream restart"
set ylabel "RSS (MiB) / open fds"
plot tsv using 1:7 skip 1 with lines lw 2 title "RSS MiB", \
     tsv using 1:8 skip 1 with lines lw 2 title "open fds"
unset multiplot
