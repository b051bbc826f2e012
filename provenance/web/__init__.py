"""The web interface: a single page (plain HTML, CSS and JavaScript in ``static/``) served by the API app.

Nothing is built or fetched at run time: the files ship inside the package and the page talks only to
the API of the server that served it (its Content-Security-Policy forbids anything else).
"""
