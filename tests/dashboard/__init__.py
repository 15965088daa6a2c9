"""The dashboard's tests: rendering, escaping, CSRF and headers through httpx (always), and the pages in
a real headless Chromium against a real server (when Debian's chromium is installed)."""
