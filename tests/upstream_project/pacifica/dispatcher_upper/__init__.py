#!/usr/bin/env python3
# -*- coding: utf-8 -*-
"""Pacifica Dispatcher Upper: upload an upper-cased copy of every new transaction."""
