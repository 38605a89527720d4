"""The seed app (examples/flask_gunicorn/app.py) written with the Flask extension: same answer, no boilerplate.

GET / answers {"code": 1, "content": "Hello CyberDB!"}, read from table `centre`.  The extension replaces the
seed's module-level client and its before_request/teardown_request pair: one client per process (made on first
use, fork-safe under Gunicorn with or without --preload), one pooled connection per request, given back at
teardown even when the view raises.

Run it against the seed's server (examples/flask_gunicorn: `python cyberdb_init.py`, then
`python cyberdb_serve.py`), from this directory:

    gunicorn -w 4 -b 127.0.0.1:8000 -k gevent app:app

The settings are the seed's (127.0.0.1:9980, its password, encrypt=True, pooled connections idle for more than
900 s dropped); any FLASK_* environment variable overrides the config key after the prefix
(Flask's `app.config.from_prefixed_env()`), e.g. FLASK_CYBERDB_URL='cyberdb://:pw@127.0.0.1:9999/?encrypt=1'.
"""

from flask import Flask

from cyberdb.flask import CyberDB

app = Flask(__name__)
app.config["CYBERDB_URL"] = "cyberdb://:hWjYvVdqRC@127.0.0.1:9980/?encrypt=1&time_out=900"
app.config.from_prefixed_env()
db = CyberDB(app)


@app.get("/")
def hello_world():
    centre = db.get_cyberdict("centre")
    return {"code": 1, "content": centre["content"]}


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=8000)
