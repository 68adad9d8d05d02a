package dev.tern.android

import androidx.lifecycle.DefaultLifecycleObserver
import androidx.lifecycle.LifecycleOwner
import androidx.lifecycle.ProcessLifecycleOwner
import dev.tern.Tracker

/** Uploads when the app goes to the background; tells the SDK when it comes back. */
object TernLifecycle {
    /** Call once, from Application.onCreate, on the main thread. */
    fun install(tracker: Tracker) {
        ProcessLifecycleOwner.get().lifecycle.addObserver(object : DefaultLifecycleObserver {
            override fun onStart(owner: LifecycleOwner) = tracker.onForeground()
            override fun onStop(owner: LifecycleOwner) = tracker.onBackground()
        })
    }
}
