// Small progressive enhancements; every page works without JavaScript.
document.addEventListener("submit", (event) => {
  const message = event.target.getAttribute("data-confirm");
  if (message && !window.confirm(message)) event.preventDefault();
});

// Put a fetched fragment into `el`. Parts of it marked data-oob replace the page's element of
// the same id instead (e.g. a request's buttons, which sit in the title bar). When `el` has
// data-transient-flashes and the fragment's data-state changed, flash messages about the old
// state (data-transient: "The request is queued.") are removed: they are no longer true.
function swap(el, html) {
  const incoming = document.createElement("template");
  incoming.innerHTML = html;
  incoming.content.querySelectorAll("[data-oob]").forEach((part) => {
    part.remove();
    const current = document.getElementById(part.id);
    if (current) current.replaceWith(part);
  });
  const stateOf = () => el.querySelector("[data-state]")?.getAttribute("data-state");
  const before = stateOf();
  el.replaceChildren(incoming.content);
  if (el.hasAttribute("data-transient-flashes") && stateOf() !== before) {
    document.querySelectorAll(".messages [data-transient]").forEach((flash) => flash.remove());
    document.querySelectorAll(".messages").forEach((list) => { if (!list.querySelector("li")) list.remove(); });
  }
}

// Live fragments: an element with data-poll="URL" replaces its content with that URL's HTML
// every data-interval ms until the fragment says data-final="1".
function poll(el) {
  const url = el.getAttribute("data-poll");
  const every = parseInt(el.getAttribute("data-interval") || "2000", 10);
  const tick = async () => {
    try {
      const response = await fetch(url, { headers: { "X-Requested-With": "fetch" }, credentials: "same-origin" });
      if (response.ok) {
        swap(el, await response.text());
        if (el.querySelector("[data-final='1']")) return;
      }
    } catch (e) { /* network blip: try again */ }
    setTimeout(tick, every);
  };
  setTimeout(tick, every);
}
document.addEventListener("DOMContentLoaded", () => document.querySelectorAll("[data-poll]").forEach(poll));
