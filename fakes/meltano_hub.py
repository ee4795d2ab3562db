"""A fake Meltano Hub on loopback, for `meltano add <plugin>` where hub.meltano.com is out of reach.

Meltano finds a plugin by name through two GETs (meltano/core/hub/client.py, Meltano 4.4):
the index of a plugin type, `{hub_url}/meltano/api/v1/plugins/{type}/index`, which maps each
name to its default variant and each variant to the URL of its definition (`ref`); then that
definition, a JSON object of the same fields as a plugin in meltano.yml plus `variant`.
Point a project at this fake with `MELTANO_HUB_URL=<base_url>` (Meltano's `hub_url`).

It serves the definitions the Hub serves for the plugins this project's README adds, trimmed
to what Meltano reads; the packages they name are real ones on PyPI.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from werkzeug.routing import Rule

from fakes.server import FakeAPI, json_response

if TYPE_CHECKING:
    from werkzeug.wrappers import Request, Response

API = "/meltano/api/v1"

# hub.meltano.com/loaders/target-jsonl--andyh1203, the default variant of target-jsonl.
TARGET_JSONL: dict[str, Any] = {
    "name": "target-jsonl",
    "namespace": "target_jsonl",
    "variant": "andyh1203",
    "label": "JSON Lines (JSONL)",
    "description": "JSONL loader",
    "repo": "https://github.com/andyh1203/target-jsonl",
    "docs": "https://hub.meltano.com/loaders/target-jsonl--andyh1203",
    "pip_url": "target-jsonl",
    "settings": [
        {
            "name": "destination_path",
            "kind": "string",
            "value": "output",
            "label": "Destination Path",
            "description": "Sets the destination path the JSONL files are written to.",
        },
        {
            "name": "do_timestamp_file",
            "kind": "boolean",
            "value": False,
            "label": "Include Timestamp in File Names",
            "description": "Specifies if the files should get timestamped.",
        },
        {
            "name": "custom_name",
            "kind": "string",
            "label": "Custom File Name Override",
            "description": "Specifies a custom name for the filename, instead of the stream.",
        },
    ],
}


class FakeMeltanoHub(FakeAPI):
    """The Hub's plugin index and definitions, by plugin type (`loaders`, `utilities`, ...)."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(validate=False, host=host, port=port)
        self.plugins: dict[str, dict[str, dict[str, Any]]] = {"loaders": {}}
        self.add("loaders", TARGET_JSONL)

    def add(self, plugin_type: str, definition: dict[str, Any]) -> None:
        """Serve `definition` (with its `name` and `variant`) under `plugin_type`."""
        with self.lock:
            self.plugins.setdefault(plugin_type, {})[definition["name"]] = definition

    def rules(self) -> Iterable[Rule]:
        """The index of a plugin type, and one variant's definition."""
        yield Rule(f"{API}/plugins/<plugin_type>/index", endpoint="index")
        yield Rule(f"{API}/plugins/<plugin_type>/<name>--<variant>", endpoint="definition")

    def index(self, request: Request, plugin_type: str) -> Response:
        """Every plugin of a type: its default variant and where each variant's definition is."""
        if plugin_type not in self.plugins:
            return json_response({"message": "Not Found"}, status=404)
        root = request.host_url.rstrip("/") + API
        return json_response(
            {
                name: {
                    "default_variant": plugin["variant"],
                    "logo_url": None,
                    "variants": {
                        plugin["variant"]: {
                            "ref": f"{root}/plugins/{plugin_type}/{name}--{plugin['variant']}"
                        }
                    },
                }
                for name, plugin in self.plugins[plugin_type].items()
            }
        )

    def definition(self, request: Request, plugin_type: str, name: str, variant: str) -> Response:
        """One variant's definition."""
        plugin = self.plugins.get(plugin_type, {}).get(name)
        if plugin is None or plugin["variant"] != variant:
            return json_response({"message": "Not Found"}, status=404)
        return json_response(plugin)
