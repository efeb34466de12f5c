/* Orthogonal-slice viewer of a scan's maps: one image per axis, a slider per axis, one map picker.
   The images come from /api/v1/scans/{id}/slice.png, which draws every slice of a map on the same
   colour scale, so moving a slider or changing the axis never changes what a colour means. */
(function () {
  "use strict";

  function sliceUrl(viewer, axis, index) {
    var params = new URLSearchParams({ map: viewer.querySelector("select.map").value, axis: axis, index: String(index) });
    return viewer.getAttribute("data-slice-url") + "?" + params.toString();
  }

  function showScale(viewer) {
    var select = viewer.querySelector("select.map");
    var option = select.options[select.selectedIndex];
    var low = viewer.querySelector(".colourbar .low");
    var high = viewer.querySelector(".colourbar .high");
    var unit = viewer.querySelector(".colourbar .unit");
    if (low) { low.textContent = option.getAttribute("data-vmin") || ""; }
    if (high) { high.textContent = option.getAttribute("data-vmax") || ""; }
    if (unit) { unit.textContent = option.getAttribute("data-unit") || ""; }
  }

  function update(viewer, figure) {
    var slider = figure.querySelector("input[type=range]");
    var axis = slider.getAttribute("data-axis");
    var img = figure.querySelector("img");
    figure.querySelector(".index").textContent = slider.value;
    img.setAttribute("alt", "slice " + axis + " = " + slider.value);
    img.src = sliceUrl(viewer, axis, slider.value);
  }

  function init(viewer) {
    var figures = viewer.querySelectorAll("figure[data-axis]");
    Array.prototype.forEach.call(figures, function (figure) {
      figure.querySelector("input[type=range]").addEventListener("input", function () { update(viewer, figure); });
      update(viewer, figure);
    });
    viewer.querySelector("select.map").addEventListener("change", function () {
      showScale(viewer);
      Array.prototype.forEach.call(figures, function (figure) { update(viewer, figure); });
    });
    showScale(viewer);
  }

  function start() {
    Array.prototype.forEach.call(document.querySelectorAll(".slice-viewer"), init);
  }

  start();  // the scripts load at the end of <body>: the page is there
})();
