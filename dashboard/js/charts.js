// Charts on the vendored uPlot (vendor/uplot-*/): time series lines and
// stacked bars, sized to their container and themed from the CSS variables.

import { h, fmtInt } from './dom.js';

function css(name, fallback) {
  const v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return v || fallback;
}

function compact(v) {
  if (v === null || v === undefined) return '';
  const a = Math.abs(v);
  if (a >= 1e6) return `${+(v / 1e6).toFixed(1)}M`;
  if (a >= 1e3) return `${+(v / 1e3).toFixed(1)}k`;
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

/**
 * A time chart in `container`.
 *   series: [{label, color (CSS var name), fill: bool}]
 *   kind:   'line' | 'bars' (bars are stacked: series[i] is drawn on top of series[i+1..])
 *   height: px
 *   empty:  text shown when every value is 0
 *   format: value formatter for the legend
 * Returns {update(xsMs, ys[][]), destroy()}.
 */
export function timeChart(container, { series, kind = 'line', height = 240, empty = 'No data in this range', format = fmtInt, label }) {
  const uPlot = window.uPlot;
  const plot = h('div', { class: 'chart-plot', role: 'img', 'aria-label': label || series.map((s) => s.label).join(', ') });
  const emptyEl = h('div', { class: 'chart-empty', text: empty, hidden: true });
  container.replaceChildren(plot, emptyEl);
  container.classList.add('chart');

  if (!uPlot) {
    emptyEl.textContent = 'The charting library did not load.';
    emptyEl.hidden = false;
    return { update() {}, destroy() {} };
  }

  const grid = css('--grid', '#e5e7eb');
  const muted = css('--text-muted', '#6b7280');
  const axisFont = '11px system-ui, sans-serif';
  let raw = series.map(() => []);

  const bars = kind === 'bars' ? uPlot.paths.bars({ size: [0.7, 48], gap: 1 }) : null;
  const opts = {
    width: Math.max(200, container.clientWidth || 600),
    height,
    padding: [12, 12, 0, 4],
    cursor: { drag: { x: false, y: false }, points: { size: 6 } },
    legend: { live: true },
    scales: { x: { time: true }, y: { range: (_u, min, max) => [0, Math.max(1, max * 1.1)] } },
    axes: [
      { stroke: muted, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 }, font: axisFont },
      {
        stroke: muted, grid: { stroke: grid, width: 1 }, ticks: { show: false }, font: axisFont, size: 44,
        values: (_u, vals) => vals.map(compact),
      },
    ],
    series: [
      {},
      ...series.map((s, i) => {
        const color = css(s.color, '#3b82f6');
        return {
          label: s.label,
          stroke: color,
          width: kind === 'bars' ? 0 : 2,
          fill: kind === 'bars' ? color : s.fill ? `${color}22` : undefined,
          paths: bars || undefined,
          points: { show: false },
          value: (_u, _v, _si, idx) => (idx === null || idx === undefined ? '—' : format(raw[i][idx] ?? 0)),
        };
      }),
    ],
  };
  const u = new uPlot(opts, [[], ...series.map(() => [])], plot);

  const ro = new ResizeObserver(() => {
    const w = container.clientWidth;
    if (w > 0 && Math.abs(w - u.width) > 2) u.setSize({ width: w, height });
  });
  ro.observe(container);

  return {
    update(xsMs, ys) {
      raw = ys;
      let drawn = ys;
      if (kind === 'bars') {
        // Stack: series i shows the sum of series i..n-1, drawn first to last.
        drawn = ys.map((_s, i) => ys[0].map((_v, j) => ys.slice(i).reduce((a, s) => a + (s[j] || 0), 0)));
      }
      const total = ys.reduce((a, s) => a + s.reduce((b, v) => b + (v || 0), 0), 0);
      emptyEl.hidden = total > 0;
      u.setData([xsMs.map((t) => t / 1000), ...drawn]);
    },
    destroy() {
      ro.disconnect();
      u.destroy();
    },
  };
}
