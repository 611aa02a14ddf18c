"""The operator dashboard served by the admin listener at `/ui` (issue 13).

`static/` holds the single-page app (plain ES modules, no build step) and the vendored
libraries it imports (`static/vendor/VENDORED.md`); `server` answers `/ui` requests with those
files and the security headers. The pages talk only to the public admin API with the admin key
the operator typed, and the Playground to the proxy with a pasted caller key.
"""
