// pydata-sphinx-theme reads the reader's colour mode from localStorage; on a first visit there is
// none, the page starts with an empty mode and the theme logs "Got invalid theme mode". Start from
// "auto" (follow the system setting), which is what the theme then falls back to anyway.
if (!document.documentElement.dataset.mode) {
  document.documentElement.dataset.mode = "auto";
}
