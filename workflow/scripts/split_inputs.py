from wmrepair.chunks import split_into_chunks
from wmrepair.smk import setup

setup(snakemake)  # noqa: F821 - injected by Snakemake
sm = snakemake  # noqa: F821
n = split_into_chunks(sm.params.input_dir, sm.output[0], sm.params.chunk_size)
print(f"{n} chunks")
