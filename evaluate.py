"""Scores a model on 300-W: NME, failure rates, AUC and CED, per subset.

  python evaluate.py --workdir=RUN --data_dir=DATA --output_dir=EVAL
  python evaluate.py --model=EXPORT[/landmarks_int8.tflite] --data_dir=300W \\
      --output_dir=EVAL --split=val [--box=landmarks] [--overlays=20]

--data_dir is either prepared shards (a folder with manifest.json; --split
defaults to val) or a raw 300-W folder in the dlib XML or .pts layout (--split
is required: val, train or all, as `pipeline.prepare` splits it). Following
300-W, the model gets each face's tight ground-truth landmark box; --box=
annotation gives it the box stored with the face (dlib's, in the XML layout).

Groups: every subset present and 300-W's common (lfpw/testset + helen/testset),
challenging (ibug) and full subsets when there. Writes report.json, ced.png and
optional overlays/ (evaluation/evaluate_lib.py).

  python evaluate.py --data_dir=300W_PHOTOS --detector=blazeface --split=val

is photo mode: the detector runs on each whole photo and every annotated face
is matched to a detection (evaluation/photos.py): faces found, NME on found
faces, failure rate and CED counting misses as failures. --model defaults to
the shipped model.
"""

import training.tf_logs  # pylint: disable=unused-import  # Before TensorFlow.

from evaluation import evaluate_lib
from facelandmark import config_flags


def main(argv):
  del argv
  evaluate_lib.evaluate(config_flags.config_from_flags(
      evaluate_lib.EvalConfig), progress=True)


if __name__ == '__main__':
  sections = config_flags.define_flags(evaluate_lib.EvalConfig,
                                       required=('data_dir',))
  config_flags.run(main, 'evaluate', sections)
