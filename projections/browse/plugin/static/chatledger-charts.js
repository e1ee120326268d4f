// Draws every chart of a chatledger page: each <div class="chatledger-chart"> names the
// <script type="application/json"> holding its Vega-Lite spec (data included). Vega and
// Vega-Lite are the files bundled with the plugin; nothing is fetched from elsewhere.
// SVG output, so that the marks are elements a test (or a screen reader) can find.
(function () {
  "use strict";

  function draw(container) {
    var spec = JSON.parse(document.getElementById(container.dataset.spec).textContent);
    var compiled = vegaLite.compile(spec).spec;
    var view = new vega.View(vega.parse(compiled), {
      renderer: "svg",
      container: container,
      hover: true
    });
    return view.runAsync().then(function () {
      container.setAttribute("data-rendered", "true");
    });
  }

  function drawAll() {
    var containers = document.querySelectorAll(".chatledger-chart");
    Promise.all(Array.prototype.map.call(containers, draw)).then(function () {
      document.body.setAttribute("data-charts-rendered", String(containers.length));
    }, function (error) {
      document.body.setAttribute("data-charts-error", String(error));
      throw error;
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", drawAll);
  } else {
    drawAll();
  }
})();
