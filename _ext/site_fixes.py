"""Sphinx extension: drop duplicate <script> entries from every page.

Jupyter Book 1.0.4 registers sphinx-thebe's inline configuration script twice, so every page
raised "Identifier 'THEBE_JS_URL' has already been declared" in the browser console (one copy
with filename None, one with filename ""). A script listed twice is always a bug, so each page
keeps the first copy only.
"""


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    seen, unique = set(), []
    for script in context.get("script_files", []):
        # inline scripts come with filename None or "" depending on who added them
        key = (getattr(script, "filename", script) or "", repr(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
