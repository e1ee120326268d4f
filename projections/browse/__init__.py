"""See a store in the browser: Datasette over a store file, read-only, made readable.

- `sqlfunctions`: SQL functions that decode stored payloads (with the file's own compression
  dictionary) and show times and sources as text, for any connection to a store file.
- `queries`: the canned queries (the readable views and the audit questions), one named SQL
  statement each.
- `charts`: the data and the Vega-Lite specs of the chart pages.
- `server`: run Datasette on one or more stores (what `chatledger browse` calls).
- `plugin`: the Datasette plugin (registered under the `datasette` entry point), with the
  bundled JavaScript and the templates of its pages.

Only `plugin` and `server` import Datasette (an optional extra: `chatledger[browse]`), and
`server` only when it runs; nothing here writes to a store.
"""
