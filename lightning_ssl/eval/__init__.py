"""Evaluation of pretrained encoders.

* :mod:`~lightning_ssl.eval.linear`: ``LinearEvaluation``, offline linear evaluation;
* :mod:`~lightning_ssl.eval.knn_eval`: ``KNNEvaluation``, offline kNN evaluation;
* :mod:`~lightning_ssl.eval.finetune`: ``FineTune``, full fine-tuning (MAE's recipe) and the
  semi-supervised protocol (:mod:`~lightning_ssl.eval.subsets`: 1% / 10% of the labels);
* :mod:`~lightning_ssl.eval.pretrained`: loading any method's checkpoint and its encoder;
* :mod:`~lightning_ssl.eval.data`: the labelled loaders and feature banks they use.

The weighted kNN vote they share with the kNN monitor callback is
:func:`lightning_ssl.nn.knn.knn_predict` (a layer below both). Nothing is imported here: the
evaluations import the methods, and the CLI imports the evaluations it names.
"""
