// pydata-sphinx-theme reads the reader's colour mode from localStorage; on a first visit there is
// none, the page starts with an empty mode and the theme logs "Got invalid theme mode". Start from
// "auto" (follow the system setting), which is what the theme then falls back to anyway.
if (!document.documentElement.dataset.mode) {
  document.documentElement.dataset.mode = "auto";
}

// Both themes bind their sidebar handlers to the FIRST .primary-toggle / .secondary-toggle of the
// page (document.querySelector), which is the button in pydata's navbar, hidden above; the
// button the reader sees, in the book's header, had no handler and did nothing. Forward its
// clicks to the bound one: on a wide screen the sidebar collapses, on a phone it opens.
document.addEventListener("DOMContentLoaded", () => {
  for (const kind of [".primary-toggle", ".secondary-toggle"]) {
    const [bound, ...others] = document.querySelectorAll(kind);
    for (const button of others) {
      button.addEventListener("click", (event) => {
        event.preventDefault();
        bound.click();
      });
    }
  }
});
