"""Jobs: what a command does, each a short recipe over the stages.

    train.py    data -> model -> fit -> evaluate -> track -> export -> register
    tune.py     a KerasTuner search whose trials are trainings
    retrain.py  the nightly job: check data, train a challenger, promote only a better one
    study.py    variants of a config side by side
    report.py   an HTML report of a run or an experiment
    prepare.py  prepare a dataset as its own step

A new job is a module here, a function in pipeline/api.py and a command in cli.py.
Stages never import jobs; jobs import stages.
"""
