// tuner-service dashboard: charts, sortable tables, live updates, copy buttons. No dependency but plotly.js,
// which the app serves itself.
"use strict";

(function () {
  const PLOT_CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["sendDataToCloud"] };

  // -- charts ----------------------------------------------------------------------------------------------
  function draw(id, chart) {
    const el = document.getElementById(id);
    if (!el) return;
    el.setAttribute("aria-label", chart.label);
    if (!chart.figure) {
      el.hidden = true;
      return;
    }
    el.hidden = false;
    if (window.Plotly) {
      window.Plotly.react(el, chart.figure.data, chart.figure.layout, PLOT_CONFIG);
    } else {
      el.textContent = chart.label; // plotly.js did not load: the description stands in for the chart
    }
  }

  function drawAll(figures) {
    for (const [id, chart] of Object.entries(figures || {})) draw(id, chart);
  }

  // -- sortable tables -------------------------------------------------------------------------------------
  function cellValue(row, index) {
    const cell = row.children[index];
    if (!cell) return "";
    return cell.dataset.sort !== undefined ? cell.dataset.sort : cell.textContent.trim();
  }

  function compare(a, b, type, nullsLast, direction) {
    const emptyA = a === "", emptyB = b === "";
    if (emptyA || emptyB) {
      if (emptyA && emptyB) return 0;
      return nullsLast ? (emptyA ? 1 : -1) : (emptyA ? -1 : 1) * direction;
    }
    const numA = Number(a), numB = Number(b);
    const numeric = type === "number" || (type === "auto" && !Number.isNaN(numA) && !Number.isNaN(numB));
    const order = numeric ? numA - numB : a.localeCompare(b, undefined, { numeric: true });
    return order * direction;
  }

  function sortTable(table) {
    const header = table.querySelector("th[aria-sort]");
    const body = table.tBodies[0];
    if (!header || !body) return;
    const index = Array.from(header.parentElement.children).indexOf(header);
    const button = header.querySelector("button.sort");
    const type = (button && button.dataset.type) || "auto";
    const nullsLast = true; // empty cells (no score yet) stay at the bottom either way
    const direction = header.getAttribute("aria-sort") === "descending" ? -1 : 1;
    const rows = Array.from(body.rows).filter((r) => r.children.length > 1);
    rows.sort((ra, rb) => compare(cellValue(ra, index), cellValue(rb, index), type, nullsLast, direction));
    for (const row of rows) body.appendChild(row);
  }

  const sortChoice = new Map(); // table id -> {key, order} the person chose; survives live re-rendering

  function restoreSort(table) {
    const choice = sortChoice.get(table.id);
    if (choice) {
      for (const th of table.querySelectorAll("thead th")) {
        const button = th.querySelector("button.sort");
        if (button && button.dataset.key === choice.key) th.setAttribute("aria-sort", choice.order);
        else th.removeAttribute("aria-sort");
      }
    }
    sortTable(table);
  }

  function setUpSorting() {
    document.addEventListener("click", (event) => {
      const button = event.target.closest("table.sortable thead button.sort");
      if (!button) return;
      const table = button.closest("table");
      const header = button.closest("th");
      const order = header.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
      sortChoice.set(table.id, { key: button.dataset.key, order });
      restoreSort(table);
    });
    for (const table of document.querySelectorAll("table.sortable")) sortTable(table);
  }

  // -- live updates ----------------------------------------------------------------------------------------
  const shown = new Map(); // fragment id -> the HTML last put there, so unchanged parts keep focus and state

  function applyLive(data) {
    for (const [id, html] of Object.entries(data.html || {})) {
      const el = document.getElementById(id);
      if (!el || shown.get(id) === html) continue;
      el.innerHTML = html;
      shown.set(id, html);
      for (const table of el.querySelectorAll("table.sortable")) restoreSort(table);
      const around = el.closest("table.sortable");
      if (around) restoreSort(around);
    }
    drawAll(data.figures);
  }

  function startLive(main) {
    const url = main.dataset.liveUrl;
    const every = Number(main.dataset.liveEvery || 1500);
    let timer = null;
    async function poll() {
      if (document.hidden) {
        timer = setTimeout(poll, every);
        return;
      }
      try {
        const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
        if (response.status === 401) {
          const body = await response.json();
          window.location.assign(body.signin);
          return;
        }
        if (response.ok) {
          const data = await response.json();
          applyLive(data);
          if (data.done) {
            main.dataset.live = "done";
            return; // the study (or trial) is over: one last update, then stop polling
          }
        }
      } catch (err) {
        // the server restarting or the network dropping: keep trying at the same pace
      }
      timer = setTimeout(poll, every);
    }
    main.dataset.live = "on";
    timer = setTimeout(poll, every);
    window.addEventListener("beforeunload", () => clearTimeout(timer));
  }

  // -- copy buttons ----------------------------------------------------------------------------------------
  function setUpCopy() {
    document.addEventListener("click", async (event) => {
      const button = event.target.closest("button.copy");
      if (!button) return;
      const source = document.getElementById(button.dataset.copy);
      if (!source) return;
      const label = button.textContent;
      try {
        await navigator.clipboard.writeText(source.textContent);
        button.textContent = "Copied";
      } catch (err) {
        const range = document.createRange();
        range.selectNodeContents(source);
        const selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        button.textContent = "Selected: press Ctrl+C";
      }
      setTimeout(() => (button.textContent = label), 2000);
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const data = document.getElementById("figures-data");
    if (data) drawAll(JSON.parse(data.textContent));
    setUpSorting();
    const main = document.getElementById("main");
    if (main && main.dataset.liveUrl) startLive(main);
    setUpCopy();
    const summary = document.getElementById("error-summary");
    if (summary) summary.focus();
  });
})();
