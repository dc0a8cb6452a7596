"""Make align-track's ``tracker`` config group visible to every Hydra app.

Hydra imports each module under ``hydra_plugins`` when an app starts, before it
composes the config; importing this one puts ``tracker=sqlite`` (and ``aim``,
``mlflow``, ``clearml``) in Hydra's ConfigStore.
"""
from align_track.settings import register_options

register_options()
