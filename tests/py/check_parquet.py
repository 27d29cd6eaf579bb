"""Opens an idflow Parquet dataset with pyarrow (and DuckDB) and checks it against
expectations given on the command line. Exit 0 when everything matches; prints why not."""
import json
import sys

import pyarrow as pa
import pyarrow.parquet as pq


def main() -> int:
    directory, expected_rows, expected_identities = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    table = pq.ParquetDataset(directory).read()
    problems = []
    if table.num_rows != expected_rows:
        problems.append(f"rows: {table.num_rows} != {expected_rows}")
    schema = table.schema
    want = {
        "identity": pa.uint32(),
        "identity_name": pa.string(),
        "path": pa.string(),
        "image": pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
    }
    for name, typ in want.items():
        if schema.field(name).type != typ:
            problems.append(f"{name}: {schema.field(name).type} != {typ}")
    meta = json.loads(schema.metadata[b"huggingface"])
    if meta["info"]["features"]["image"] != {"_type": "Image"}:
        problems.append(f"HF image feature: {meta['info']['features']['image']}")
    if meta["info"]["features"]["identity"] != {"dtype": "uint32", "_type": "Value"}:
        problems.append(f"HF identity feature: {meta['info']['features']['identity']}")
    identities = len(set(table.column("identity").to_pylist()))
    if identities != expected_identities:
        problems.append(f"identities: {identities} != {expected_identities}")
    first = table.column("image")[0].as_py()
    if not (first["bytes"][:3] == b"\xff\xd8\xff" or first["bytes"][:4] == b"\x89PNG"):
        problems.append("image bytes are neither JPEG nor PNG")

    import duckdb

    n, k = duckdb.sql(f"select count(*), count(distinct identity) from read_parquet('{directory}/*.parquet')").fetchone()
    if (n, k) != (expected_rows, expected_identities):
        problems.append(f"duckdb: {(n, k)} != {(expected_rows, expected_identities)}")
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
