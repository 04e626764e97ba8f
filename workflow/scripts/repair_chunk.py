from wmrepair.chunks import read_chunk
from wmrepair.repair import build_engine
from wmrepair.smk import settings, setup
from wmrepair.stamps import load_stamps

setup(snakemake)  # noqa: F821 - injected by Snakemake
sm = snakemake  # noqa: F821
s = settings(sm)
# Snakemake decides when a chunk reruns (model or chunk changed): redo every image then.
s.repair.skip_existing = False
stamps = load_stamps(sm.input.stamps[0] if sm.input.get("stamps") else None)  # repair.collection: off = none
engine = build_engine(sm.input.model, s.optimization, s.predict, s.repair, s.inpaint, threads=sm.threads,
                      stamps=stamps)
engine.run(sm.params.input_dir, sm.params.images, read_chunk(sm.input.chunk), manifest=sm.output.manifest,
           masks_dir=sm.params.masks, progress=True)
engine.analyzer.generate_performance_report(sm.output.manifest.replace(".csv", ".performance.json"),
                                            memory=engine.memory.summary())
