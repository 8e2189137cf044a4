#!/usr/bin/env python3
# -*- coding: utf-8 -*-
"""Setup and install the upper-casing dispatcher (an upstream 0.2.5-style project)."""
from setuptools import find_namespace_packages, setup

setup(
    name='pacifica-dispatcher-upper',
    version='0.0.1',
    description='Pacifica Dispatcher Upper',
    packages=find_namespace_packages(include=['pacifica.*']),
    package_data={'pacifica.dispatcher_upper': ['jsonpath2/*.txt']},
    install_requires=[
        'celery[redis]',
        'cherrypy',
        'jsonpath2',
        'pacifica-cli',
        'pacifica-dispatcher',
        'pacifica-downloader',
        'pacifica-uploader',
        'peewee',
    ],
    entry_points={
        'console_scripts': [
            'pacifica-dispatcher-upper=pacifica.dispatcher_upper.__main__:main',
        ],
    },
)
