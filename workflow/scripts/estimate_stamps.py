from wmrepair.predict import OptimizedWatermarkPredictor
from wmrepair.smk import settings, setup
from wmrepair.stamps import estimate_folder

setup(snakemake)  # noqa: F821 - injected by Snakemake
sm = snakemake  # noqa: F821
s = settings(sm)
predictor = OptimizedWatermarkPredictor(sm.input.model, s.optimization, s.predict, threads=sm.threads)
stamps = estimate_folder(sm.params.input_dir, predictor, out_dir=sm.output[0])
print(f"{len(stamps)} stamp(s): " + ", ".join(f"{st.name} {st.size[1]}x{st.size[0]} carried by {st.support}, "
                                               f"quality {st.quality:.2f}" for st in stamps))
