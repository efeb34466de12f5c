/* Orthogonal-slice viewer of a scan's maps: one image per axis, a slider per axis, one map picker.
   The maps come from /api/v1/scans/{id}/maps and the images from /api/v1/scans/{id}/slice.png, which
   draws every slice of a map on the map's own colour scale (headers X-Scale-Min/-Max, X-Map-Unit):
   moving a slider never changes what a colour means, and the colour bar shows that scale. */
(function () {
  "use strict";

  var LABELS = { edge: "edge energy", white_line: "white-line energy", white_line_height: "white-line height",
                 rfactor: "LCF R-factor", cluster: "phase cluster" };

  function label(name) {
    return LABELS[name] || name.replace(/^fraction:/, "fraction of ");
  }

  function scaleText(value) {
    var number = parseFloat(value);
    return isFinite(number) ? String(+number.toPrecision(6)) : "";
  }

  function showScale(viewer, response) {
    viewer.querySelector(".colourbar .low").textContent = scaleText(response.headers.get("X-Scale-Min"));
    viewer.querySelector(".colourbar .high").textContent = scaleText(response.headers.get("X-Scale-Max"));
    var unit = response.headers.get("X-Map-Unit") || "";
    viewer.querySelector(".colourbar .unit").textContent = unit === "dimensionless" ? "" : unit;
  }

  function update(viewer, figure) {
    var slider = figure.querySelector("input[type=range]");
    var axis = slider.getAttribute("data-axis");
    var img = figure.querySelector("img");
    var problem = figure.querySelector(".problem");
    var params = new URLSearchParams({ map: viewer.querySelector("select.map").value, axis: axis,
                                       index: slider.value });
    var url = viewer.getAttribute("data-slice-url") + "?" + params.toString();
    var request = (figure.requests = (figure.requests || 0) + 1);
    figure.querySelector(".index").textContent = slider.value;
    fetch(url, { credentials: "same-origin" }).then(function (response) {
      if (!response.ok) {
        return response.json().then(function (body) { throw new Error(body.error || "HTTP " + response.status); });
      }
      return response.blob().then(function (blob) {
        if (request !== figure.requests) { return; }  // a newer slice was asked for meanwhile
        showScale(viewer, response);
        if (img.objectUrl) { URL.revokeObjectURL(img.objectUrl); }
        img.objectUrl = URL.createObjectURL(blob);
        img.setAttribute("data-src", url);
        img.setAttribute("alt", label(params.get("map")) + ", slice " + axis + " = " + slider.value);
        img.src = img.objectUrl;
        problem.textContent = "";
      });
    }).catch(function (error) {
      if (request === figure.requests) { problem.textContent = error.message; }
    });
  }

  function updateAll(viewer) {
    Array.prototype.forEach.call(viewer.querySelectorAll("figure[data-axis]"), function (figure) {
      update(viewer, figure);
    });
  }

  function init(viewer) {
    var select = viewer.querySelector("select.map");
    fetch(viewer.getAttribute("data-maps-url"), { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.json() : { maps: [] }; })
      .then(function (body) {
        var maps = body.maps && body.maps.length ? body.maps : [{ name: "edge" }];
        select.textContent = "";
        maps.forEach(function (map) {
          var option = document.createElement("option");
          option.value = map.name;
          option.textContent = label(map.name);
          select.appendChild(option);
        });
        Array.prototype.forEach.call(viewer.querySelectorAll("figure[data-axis]"), function (figure) {
          figure.querySelector("input[type=range]").addEventListener("input", function () { update(viewer, figure); });
        });
        select.addEventListener("change", function () { updateAll(viewer); });
        updateAll(viewer);
      });
  }

  Array.prototype.forEach.call(document.querySelectorAll(".slice-viewer"), init);
})();
