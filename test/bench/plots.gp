# Remora benchmark plots. Called by report.py with -e variables:
#   kind  = "hist" (clustered bars: first column is the label, then ncols value columns)
#         | "lines" (first column is x = number of Services, log scale)
#   data, out, title, ylabel, ncols; optional logy = "1"
set terminal pngcairo size 1000,560 noenhanced font "sans,10"
set output out
set title title
set ylabel ylabel
set grid ytics
set key below
set datafile missing "NaN"
set datafile separator "\t"
if (exists("logy")) { set logscale y }
n = int(ncols)
if (kind eq "hist") {
    set style data histograms
    set style histogram clustered gap 1
    set style fill solid 0.85 border -1
    set boxwidth 0.9
    set xtics rotate by -20 nomirror
    set yrange [0:*]
    if (exists("logy")) { set yrange [0.005:*]; set ytics format "%g" }
    plot for [i=2:n+1] data using i:xtic(1) title columnhead
} else {
    set logscale x
    set xlabel "Services" offset 0,0.3
    set bmargin 7
    set xrange [0.7:*]
    set yrange [0:*]
    if (exists("logy")) { set yrange [*:*] }
    plot for [i=2:n+1] data using 1:i with linespoints lw 2 pt 7 title columnhead
}
