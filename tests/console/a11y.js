// Basic accessibility checks run in the page (the browser tests): every form control has
// a label, every image and svg a text alternative, every button a name, text contrast is
// at least 4.5:1 (WCAG AA), and nothing is wider than the window. Returns the problems.
const problems = [];
const visible = (el) => el.getClientRects().length > 0;
for (const el of document.querySelectorAll("input, select, textarea")) {
  if (el.type === "hidden" || !visible(el)) continue;
  const labelled = (el.id && document.querySelector(`label[for="${el.id}"]`)) ||
    el.closest("label") || el.getAttribute("aria-label") || el.getAttribute("aria-labelledby");
  if (!labelled) problems.push(`unlabelled ${el.tagName} ${el.name}`);
}
for (const el of document.querySelectorAll("button, a[href]")) {
  if (visible(el) && !(el.textContent.trim() || el.getAttribute("aria-label"))) {
    problems.push(`nameless ${el.tagName}`);
  }
}
for (const el of document.querySelectorAll("img:not([alt]), svg:not([role])")) {
  problems.push(`image without a text alternative: ${el.outerHTML.slice(0, 60)}`);
}
const rgb = (s) => (s.match(/[\d.]+/g) || []).map(Number);
const lum = ([r, g, b]) => {
  const f = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
  return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
};
const background = (el) => {
  for (let e = el; e; e = e.parentElement) {
    const c = rgb(getComputedStyle(e).backgroundColor);
    if (c.length === 3 || (c.length === 4 && c[3] > 0.9)) return c.slice(0, 3);
  }
  return [255, 255, 255];
};
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
const seen = new Set();
while (walker.nextNode()) {
  const el = walker.currentNode.parentElement;
  if (!walker.currentNode.textContent.trim() || seen.has(el) || !visible(el)) continue;
  if (el.closest("svg")) continue;  // plot labels: checked by the page's colours instead
  seen.add(el);
  const fg = lum(rgb(getComputedStyle(el).color).slice(0, 3));
  const bg = lum(background(el));
  const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
  if (ratio < 4.5) problems.push(`contrast ${ratio.toFixed(2)} of "${el.textContent.trim().slice(0, 30)}"`);
}
if (document.documentElement.scrollWidth > window.innerWidth + 1) {
  problems.push(`page is ${document.documentElement.scrollWidth}px wide in a ${window.innerWidth}px window`);
}
return problems;
