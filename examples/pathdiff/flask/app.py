"""The Flask side of gatehouse's framework-differential path test
(../pathdiff_test.go): the routes of the README's Flask migration, with
Flask's default routing (case-sensitive, strict slashes). Every handler
names itself in the body, so the test sees which one a path reached."""

import json
import sys

from flask import Flask, jsonify, request
from werkzeug.serving import make_server

app = Flask(__name__)


def answer(handler):
    return jsonify({"handler": handler, "url": request.full_path})


@app.route("/protected", methods=["GET", "POST"])
def protected():
    return answer("protected")


@app.route("/admin/", methods=["GET", "POST"])
@app.route("/admin/<path:rest>", methods=["GET", "POST"])
def admin(rest=""):
    return answer("admin")


@app.route("/", methods=["GET", "POST"])
@app.route("/health")
def public():
    return answer("public")


@app.errorhandler(404)
def none(_):
    return answer("none"), 404


if __name__ == "__main__":
    server = make_server("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0, app)
    # The test reads this line to learn the port.
    print(json.dumps({"listening": server.port}), flush=True)
    server.serve_forever()
