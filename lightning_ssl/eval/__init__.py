"""Evaluation of pretrained encoders.

* :mod:`~lightning_ssl.eval.knn`: the weighted kNN vote (``knn_predict``);
* :mod:`~lightning_ssl.eval.linear`: ``LinearEvaluation``, offline linear evaluation;
* :mod:`~lightning_ssl.eval.knn_eval`: ``KNNEvaluation``, offline kNN evaluation;
* :mod:`~lightning_ssl.eval.pretrained`: loading any method's checkpoint and its encoder;
* :mod:`~lightning_ssl.eval.data`: the labelled loaders and feature banks they use.

Nothing is imported here: the methods' callbacks import :mod:`lightning_ssl.eval.knn`, and the
evaluations import the methods.
"""
