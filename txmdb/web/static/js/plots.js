/* Interactive plots (uPlot, served by txmdb). Each <div class="plot" data-plot='{...}'> holds its data:
   {title, x: {label, unit}, y: {label, unit}, series: [{label, x: [...], y: [...], dash?: bool}], points?: bool}.
   Drag to zoom, double-click to reset; the legend shows the values under the cursor. */
(function () {
  "use strict";

  var PALETTE = ["#1f5fa8", "#c2410c", "#2e7d32", "#7b1fa2", "#b3261e", "#00838f", "#6d4c41", "#ad1457"];

  function axisLabel(axis) {
    return axis.unit ? axis.label + " (" + axis.unit + ")" : axis.label;
  }

  function numberFormat(unit) {
    return function (self, value) {
      if (value == null || !isFinite(value)) { return "–"; }
      var text = Math.abs(value) >= 1000 || value === Math.round(value) ? String(+value.toFixed(2)) : value.toPrecision(4);
      return unit ? text + " " + unit : text;
    };
  }

  function build(element) {
    var spec;
    try {
      spec = JSON.parse(element.getAttribute("data-plot"));
    } catch (err) {
      element.textContent = "This plot's data could not be read.";
      return;
    }
    if (!spec.series || spec.series.length === 0) {
      element.textContent = spec.empty || "No data to plot.";
      element.classList.add("note");
      return;
    }
    // Series may have different x values (spectra): uPlot.join aligns them on the union of x.
    var tables = spec.series.map(function (s) { return [s.x, s.y]; });
    var data = tables.length === 1 ? tables[0] : uPlot.join(tables);
    var series = [{ label: axisLabel(spec.x), value: numberFormat(spec.x.unit) }];
    spec.series.forEach(function (s, i) {
      var colour = s.colour || PALETTE[i % PALETTE.length];
      series.push({
        label: s.label,
        stroke: colour,
        width: 1.5,
        dash: s.dash ? [6, 4] : undefined,
        spanGaps: true,
        points: { show: !!spec.points, size: 5, fill: colour },
        paths: spec.points ? function () { return null; } : undefined,
        value: numberFormat(spec.y.unit)
      });
    });
    var width = Math.max(320, element.clientWidth || 600);
    var options = {
      title: spec.title,
      width: width,
      height: spec.height || 300,
      series: series,
      scales: { x: { time: false } },
      axes: [
        { label: axisLabel(spec.x), stroke: "#1d2430", grid: { stroke: "#e6e9ee" } },
        { label: axisLabel(spec.y), stroke: "#1d2430", grid: { stroke: "#e6e9ee" }, size: 60 }
      ],
      cursor: { drag: { x: true, y: true, uni: 20 } },
      legend: { live: true }
    };
    var plot = new uPlot(options, data, element);
    element.plot = plot;
    window.addEventListener("resize", function () {
      plot.setSize({ width: Math.max(320, element.clientWidth || 600), height: spec.height || 300 });
    });
  }

  function init() {
    Array.prototype.forEach.call(document.querySelectorAll(".plot[data-plot]"), build);
  }

  init();  // the scripts load at the end of <body>: the page is there
})();
