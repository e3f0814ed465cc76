/* aibill dashboard: progressive enhancement only. Every page works without
   this script; it adds local times, charts, a busy state on forms, the
   small-screen menu, confirmations and copying a new key. */
(function () {
  "use strict";
  var root = document.documentElement;
  root.classList.remove("no-js");
  root.classList.add("js");

  function ready(fn) {
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", fn);
    else fn();
  }

  /* Times: the server writes UTC; show the viewer's timezone, keep UTC on hover. */
  function localTimes() {
    var thisYear = new Date().getFullYear();
    var options = { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", timeZoneName: "short" };
    var sameYear = new Intl.DateTimeFormat(undefined, options);
    options.year = "numeric";
    var otherYear = new Intl.DateTimeFormat(undefined, options);
    var full = { format: function (at) { return (at.getFullYear() === thisYear ? sameYear : otherYear).format(at); } };
    var dateOnly = new Intl.DateTimeFormat(undefined, { year: "numeric", month: "short", day: "numeric", timeZone: "UTC" });
    document.querySelectorAll("time[datetime]").forEach(function (el) {
      var at = new Date(el.getAttribute("datetime"));
      if (isNaN(at.getTime())) return;
      el.textContent = el.dataset.kind === "date" ? dateOnly.format(at) : full.format(at);
    });
  }

  /* Forms: a busy state while posting. Safety against a double submit does
     not rest on this (the top-up carries an idempotency key). */
  function busyForms() {
    document.addEventListener("submit", function (event) {
      var form = event.target;
      if (!(form instanceof HTMLFormElement) || form.method.toLowerCase() !== "post") return;
      var confirmOn = event.submitter && event.submitter.dataset.confirm;
      if (confirmOn && !window.confirm(confirmOn)) {
        event.preventDefault();
        return;
      }
      window.setTimeout(function () {
        form.querySelectorAll("button[type=submit]").forEach(function (button) {
          button.disabled = true;
          button.setAttribute("aria-busy", "true");
          if (form.dataset.busy && button === event.submitter) button.textContent = form.dataset.busy;
        });
      }, 0);
    });
    window.addEventListener("pageshow", function (event) {
      if (!event.persisted) return;
      document.querySelectorAll("button[aria-busy=true]").forEach(function (b) {
        b.disabled = false;
        b.removeAttribute("aria-busy");
      });
    });
  }

  function navToggle() {
    var button = document.querySelector(".nav-toggle");
    var nav = document.getElementById("site-nav");
    if (!button || !nav) return;
    button.hidden = false;
    button.addEventListener("click", function () {
      var open = nav.classList.toggle("open");
      button.setAttribute("aria-expanded", open ? "true" : "false");
    });
  }

  function copyButtons() {
    if (!navigator.clipboard) return;
    document.querySelectorAll("[data-copy]").forEach(function (button) {
      var source = document.querySelector(button.dataset.copy);
      if (!source) return;
      button.hidden = false;
      button.addEventListener("click", function () {
        navigator.clipboard.writeText(source.textContent.trim()).then(function () {
          button.textContent = "Copied";
        });
      });
    });
  }

  /* Charts, from the numbers the page already shows in its tables. */
  var PALETTE = ["#3346c9", "#0e9f8e", "#e0892b", "#c2417a", "#7a5af0", "#4b9be0", "#8aa04a", "#9aa3b1"];

  function money(value, currency) {
    var text = String(value);
    var parts = text.split(".");
    var fraction = (parts[1] || "").replace(/0+$/, "");
    while (fraction.length < 2) fraction += "0";
    var whole = parts[0].replace(/\B(?=(\d{3})+(?!\d))/g, "\u202f");
    return whole + "." + fraction + " " + currency;
  }

  function drawCharts() {
    var source = document.getElementById("usage-data");
    if (!source) return;
    var boxes = document.querySelectorAll("[data-chart]");
    if (!window.Chart) {
      boxes.forEach(function (box) { box.classList.add("failed"); });
      return;
    }
    var data = JSON.parse(source.textContent);
    var Chart = window.Chart;
    Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
    Chart.defaults.color = "#5c6573";
    Chart.defaults.animation = window.matchMedia("(prefers-reduced-motion: reduce)").matches ? false : { duration: 300 };
    var tooltip = {
      callbacks: {
        label: function (ctx) {
          var exact = ctx.dataset.exact[ctx.dataIndex];
          return (ctx.dataset.label ? ctx.dataset.label + ": " : "") + money(exact, data.currency);
        }
      }
    };
    boxes.forEach(function (box) {
      var canvas = box.querySelector("canvas");
      var kind = box.dataset.chart;
      var config;
      if (kind === "daily") {
        config = {
          type: "bar",
          data: {
            labels: data.days.map(function (d) { return d.slice(5); }),
            datasets: data.providers.map(function (p, i) {
              return {
                label: p.name, data: p.values.map(Number), exact: p.values,
                backgroundColor: PALETTE[i % PALETTE.length], borderRadius: 2, maxBarThickness: 28
              };
            })
          },
          options: {
            maintainAspectRatio: false,
            scales: {
              x: { stacked: true, grid: { display: false } },
              y: { stacked: true, beginAtZero: true, ticks: { callback: function (v) { return v + " " + data.currency; } } }
            },
            plugins: { tooltip: tooltip, legend: { position: "bottom", labels: { boxWidth: 12, boxHeight: 12 } } }
          }
        };
      } else {
        var rows = data[kind] || [];
        config = {
          type: "bar",
          data: {
            labels: rows.map(function (r) { return r.label; }),
            datasets: [{
              label: "", data: rows.map(function (r) { return Number(r.amount); }),
              exact: rows.map(function (r) { return r.amount; }),
              backgroundColor: PALETTE[{ models: 0, users: 1, features: 2 }[kind] || 0], borderRadius: 3, maxBarThickness: 22
            }]
          },
          options: {
            indexAxis: "y", maintainAspectRatio: false,
            scales: { x: { beginAtZero: true, grid: { color: "#eef0f3" } }, y: { grid: { display: false }, ticks: { autoSkip: false } } },
            plugins: { legend: { display: false }, tooltip: tooltip }
          }
        };
      }
      try {
        new Chart(canvas, config);
        box.classList.add("ready");
      } catch (err) {
        box.classList.add("failed");
      }
    });
  }

  ready(function () {
    localTimes();
    busyForms();
    navToggle();
    copyButtons();
    drawCharts();
  });
})();
