"""`make run`: start the service in embedded mode with a fresh API key and a curl quickstart.

SQLite and a server-less broker under ./data; nothing else needs to run.
"""

from __future__ import annotations

import argparse

from core.settings import get_settings
from service.embedded import create_key, serve

QUICKSTART = """\
MetaCluster is starting on {api} (API + embedded worker, data in {data_dir}).
A new API key (shown once): {key}

  export KEY={key} API={api}
  metacluster train --data digits --family bspline --width 64,32,10 --epochs 30 --out m.safetensors
  curl -s -H "Authorization: Bearer $KEY" -F file=@m.safetensors $API/v1/models
  curl -s -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \\
       -d '{{"model_id": "<id from above>", "dataset": "digits", "config": {{"k": 16}}}}' $API/v1/jobs
  curl -s -H "Authorization: Bearer $KEY" $API/v1/jobs/<job id>
  curl -s -OJ -H "Authorization: Bearer $KEY" $API/v1/jobs/<job id>/artifacts/model.mcz

Dashboard: {api}/    OpenAPI: {api}/docs    Python client and CLI: docs/pipelines.md
  METACLUSTER_URL={api} METACLUSTER_API_KEY={key} metacluster remote jobs
Stop with Ctrl-C.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    key = create_key("quickstart")
    api = f"http://{args.host}:{args.port}"
    data_dir = get_settings().data_dir.resolve()
    print(QUICKSTART.format(api=api, key=key["key"], data_dir=data_dir), flush=True)
    serve(args.host, args.port)


if __name__ == "__main__":
    main()
