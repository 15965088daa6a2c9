// The live connection: one EventSource on /ui/api/events, resumed from the page's feed cursor, so
// that nothing that changed between rendering the page and connecting is lost.

export function connect(handlers) {
  const indicator = document.getElementById("live");
  const cursor = document.body.dataset.feedCursor;
  const source = new EventSource(`/ui/api/events${cursor ? `?cursor=${encodeURIComponent(cursor)}` : ""}`);
  const show = (state, label) => {
    if (!indicator) return;
    indicator.dataset.state = state;
    indicator.textContent = label;
  };
  source.addEventListener("open", () => show("live", "live"));
  source.addEventListener("error", () => {
    // The browser retries by itself, unless the server refused the stream (logged out, say).
    if (source.readyState === EventSource.CLOSED) show("off", "disconnected: reload the page");
    else show("reconnecting", "reconnecting…");
  });
  // The events this page missed are gone (the server restarted, or we were away too long): what the
  // page shows may be stale, so load it again rather than show something wrong.
  source.addEventListener("reset", () => window.location.reload());
  for (const [name, handler] of Object.entries(handlers)) {
    source.addEventListener(name, (event) => {
      let data;
      try {
        data = JSON.parse(event.data);
      } catch {
        return;
      }
      handler(data);
    });
  }
  window.addEventListener("pagehide", () => source.close());
  return source;
}
