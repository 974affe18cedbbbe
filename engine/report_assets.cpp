// See report_assets.h. The script recomputes the smoothed loss line exactly as
// report_svg.cpp's ema_smooth does (debiased EMA over data-base), and maps values to pixels with
// the plot geometry and ranges that report_svg.cpp writes as data attributes.
#include "engine/report_assets.h"

namespace diffuse::report_assets {

const char* const kStyle = R"CSS(
:root { --ink: #1d2330; --muted: #6b7280; --line: #e5e7eb; --panel: #ffffff; --bg: #f5f6f8; --hi: #fff4c2; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 1340px; margin: 0 auto; padding: 18px 22px 40px; }
h1 { font-size: 21px; margin: 0 0 2px; font-weight: 650; }
h2 { font-size: 15px; margin: 0 0 10px; font-weight: 650; }
.status { color: var(--muted); margin: 0 0 16px; }
.status .live { color: #15803d; font-weight: 600; }
.panel { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 14px 16px; margin-bottom: 16px; }
.runs { display: grid; grid-template-columns: repeat(auto-fit, minmax(380px, 1fr)); gap: 16px; margin-bottom: 16px; }
.runs .panel { margin: 0; }
.swatch { display: inline-block; width: 11px; height: 11px; border-radius: 2px; margin-right: 7px; vertical-align: -1px; }
table.kv { border-collapse: collapse; width: 100%; }
table.kv th { text-align: left; font-weight: 500; color: var(--muted); padding: 2px 12px 2px 0; white-space: nowrap; vertical-align: top; width: 1%; }
table.kv td { padding: 2px 0; word-break: break-word; }
.controls { display: flex; gap: 22px; align-items: center; margin-bottom: 10px; color: var(--muted); flex-wrap: wrap; }
.controls input[type=range] { width: 150px; vertical-align: middle; }
.plots { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 8px 18px; }
figure { margin: 0; }
figcaption { font-weight: 600; margin: 4px 0 2px; }
svg.plot { width: 100%; height: auto; display: block; }
svg.plot .frame { fill: none; stroke: #cbd0d8; }
svg.plot .grid { stroke: #eef0f3; }
svg.plot .tick { font-size: 11px; fill: var(--muted); }
svg.plot .empty { font-size: 13px; fill: var(--muted); }
svg.plot polyline { stroke-width: 1.6; stroke-linejoin: round; }
svg.plot polyline.faint { stroke-width: 1; opacity: 0.35; }
svg.plot polyline.smooth { stroke-width: 2; }
p.none { color: var(--muted); margin: 8px 0 0; }
.legend { display: flex; gap: 18px; flex-wrap: wrap; margin-bottom: 8px; }
.samples .latest { display: flex; gap: 18px; align-items: flex-start; flex-wrap: wrap; }
img.grid { image-rendering: pixelated; border: 1px solid var(--line); background: #000; }
img.large { width: 320px; }
.strip { display: flex; gap: 10px; overflow-x: auto; padding: 8px 0 2px; }
.strip figure { flex: none; text-align: center; color: var(--muted); font-size: 12px; }
.strip img.grid { width: 104px; display: block; }
table.options { border-collapse: collapse; width: 100%; font-size: 13px; }
table.options th, table.options td { text-align: left; padding: 3px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
table.options thead th { color: var(--muted); font-weight: 500; }
table.options tbody th { width: 1%; white-space: nowrap; font-weight: 400; }
table.options tr.differs td, table.options tr.differs th { background: var(--hi); }
code { font: 12.5px ui-monospace, "DejaVu Sans Mono", monospace; }
#tip { position: absolute; pointer-events: none; background: rgba(29,35,48,0.92); color: #fff; padding: 4px 8px;
       border-radius: 4px; font-size: 12px; display: none; white-space: nowrap; z-index: 2; }
)CSS";

const char* const kHeadScript = R"JS(
function diffuseMark(img) {
  img.dataset.loaded = img.naturalWidth > 0 ? "1" : "0";
  if (document.body) document.body.dataset.imagesLoaded = document.querySelectorAll('img[data-loaded="1"]').length;
}
)JS";

const char* const kBodyScript = R"JS(
(function () {
  const body = document.body;
  const store = (function () { try { return window.sessionStorage; } catch (e) { return null; } })();
  const pairs = (s) => (s ? s.split(";").map((p) => p.split(" ").map(Number)) : []);
  function mapper(scale) {
    const svg = scale.ownerSVGElement, d = scale.dataset, s = svg.dataset;
    const L = +s.left, T = +s.top, W = +s.width, H = +s.height;
    const x0 = +d.x0, x1 = +d.x1, y0 = +d.y0, y1 = +d.y1, log = d.scale === "log";
    return {
      px: (step) => L + ((step - x0) / (x1 - x0)) * W,
      py: (v) => T + (1 - ((log ? Math.log10(Math.max(v, Math.pow(10, y0))) : v) - y0) / (y1 - y0)) * H,
      step: (px) => x0 + ((px - L) / W) * (x1 - x0),
    };
  }
  function ema(values, w) {
    let last = 0, debias = 1;
    return values.map((v) => { last = last * w + (1 - w) * v; debias *= w; return w === 0 ? v : last / (1 - debias); });
  }
  function smooth(w) {
    document.querySelectorAll("svg.plot g.series[data-base]").forEach((g) => {
      const base = pairs(g.dataset.base), m = mapper(g.parentNode), sm = ema(base.map((p) => p[1]), w);
      const pts = base.map((p, i) => m.px(p[0]).toFixed(1) + "," + m.py(sm[i]).toFixed(1)).join(" ");
      g.querySelector("polyline.smooth").setAttribute("points", pts);
    });
    const label = document.getElementById("smoothing-value");
    if (label) label.textContent = w.toFixed(2);
  }
  function logScale(on) {
    document.querySelectorAll("svg.plot").forEach((svg) => {
      const log = svg.querySelector('g.scale[data-scale="log"]');
      if (!log) return;
      log.style.display = on ? "" : "none";
      svg.querySelector('g.scale[data-scale="linear"]').style.display = on ? "none" : "";
    });
  }
  const slider = document.getElementById("smoothing"), toggle = document.getElementById("logscale");
  if (slider) {
    const saved = store && store.getItem("diffuse-smoothing");
    if (saved !== null && saved !== undefined) slider.value = saved;
    slider.addEventListener("input", () => { smooth(+slider.value); if (store) store.setItem("diffuse-smoothing", slider.value); });
    smooth(+slider.value);
  }
  if (toggle) {
    toggle.checked = !!(store && store.getItem("diffuse-log") === "1");
    toggle.addEventListener("change", () => { logScale(toggle.checked); if (store) store.setItem("diffuse-log", toggle.checked ? "1" : "0"); });
    logScale(toggle.checked);
  }
  const tip = document.getElementById("tip");
  document.querySelectorAll("svg.plot").forEach((svg) => {
    svg.addEventListener("mousemove", (ev) => {
      const scale = Array.from(svg.querySelectorAll("g.scale")).find((g) => g.style.display !== "none");
      if (!scale) return;
      const p = svg.createSVGPoint();
      p.x = ev.clientX; p.y = ev.clientY;
      const at = p.matrixTransform(svg.getScreenCTM().inverse()), m = mapper(scale);
      let best = null;
      scale.querySelectorAll("g.series").forEach((g) => {
        if (!g._xy) g._xy = pairs(g.dataset.xy);
        for (const [step, value] of g._xy) {
          const d = Math.hypot(m.px(step) - at.x, (m.py(value) - at.y) * 0.25);
          if (!best || d < best.d) best = { d, step, value, run: g.dataset.run };
        }
      });
      if (!best) return;
      const several = scale.querySelectorAll("g.series").length > 1;
      tip.textContent = "step " + best.step + ": " + Number(best.value.toPrecision(5)) + (several ? "  (" + best.run + ")" : "");
      tip.style.left = ev.pageX + 12 + "px";
      tip.style.top = ev.pageY - 28 + "px";
      tip.style.display = "block";
    });
    svg.addEventListener("mouseleave", () => { tip.style.display = "none"; });
  });
  window.addEventListener("load", () => document.querySelectorAll("img").forEach(diffuseMark));
  if (body.dataset.live === "1") setTimeout(() => location.reload(), 1000 * +body.dataset.reload);
  body.dataset.script = "ran";  // the browser tests' sign that nothing above threw
})();
)JS";

}  // namespace diffuse::report_assets
