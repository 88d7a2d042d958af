// Small progressive enhancements; every page works without JavaScript.
document.addEventListener("submit", (event) => {
  const message = event.target.getAttribute("data-confirm");
  if (message && !window.confirm(message)) event.preventDefault();
});

// Live fragments: an element with data-poll="URL" replaces its content with that URL's HTML
// every data-interval ms until the fragment says data-final="1".
function poll(el) {
  const url = el.getAttribute("data-poll");
  const every = parseInt(el.getAttribute("data-interval") || "2000", 10);
  const tick = async () => {
    try {
      const response = await fetch(url, { headers: { "X-Requested-With": "fetch" }, credentials: "same-origin" });
      if (response.ok) {
        el.innerHTML = await response.text();
        if (el.querySelector("[data-final='1']")) return;
      }
    } catch (e) { /* network blip: try again */ }
    setTimeout(tick, every);
  };
  setTimeout(tick, every);
}
document.addEventListener("DOMContentLoaded", () => document.querySelectorAll("[data-poll]").forEach(poll));
