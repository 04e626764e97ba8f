from wmrepair.cache import build_cache
from wmrepair.smk import setup

setup(snakemake)  # noqa: F821 - injected by Snakemake
sm = snakemake  # noqa: F821
cache, counts = build_cache(sm.params.data, sm.output.index.rsplit("/", 1)[0], size=sm.params.size)
cache.write_index(sm.output.index, {"counts": counts, "source": str(sm.params.data)})
print(counts)
