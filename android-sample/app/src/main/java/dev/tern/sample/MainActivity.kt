package dev.tern.sample

import android.os.Bundle
import androidx.activity.ComponentActivity
import androidx.activity.compose.setContent
import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.padding
import androidx.compose.material3.Button
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.Text
import androidx.compose.runtime.LaunchedEffect
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.remember
import androidx.compose.runtime.setValue
import androidx.compose.ui.Modifier
import androidx.compose.ui.unit.dp
import dev.tern.Tracker
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.delay
import kotlinx.coroutines.withContext

class MainActivity : ComponentActivity() {
    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        val tracker = (application as SampleApp).tracker
        tracker.track("screen_view", mapOf("screen" to "main"))
        setContent {
            MaterialTheme {
                var pending by remember { mutableStateOf(0uL) }
                var dropped by remember { mutableStateOf(0uL) }
                LaunchedEffect(Unit) {
                    while (true) {
                        // pendingStats() reads the database: off the main thread.
                        val stats = withContext(Dispatchers.IO) { tracker.pendingStats() }
                        pending = stats.pendingEvents
                        dropped = stats.droppedEvents
                        delay(500)
                    }
                }
                Column(Modifier.padding(24.dp), verticalArrangement = Arrangement.spacedBy(12.dp)) {
                    Text("Events waiting in the buffer: $pending")
                    Text("Events dropped on this device: $dropped")
                    Button(onClick = { tracker.track("add_to_cart", mapOf("sku" to "tern-mug", "price" to 12.5)) }) {
                        Text("Add to cart")
                    }
                    Button(onClick = {
                        tracker.track("checkout", mapOf("total" to 12.5, "items" to listOf(mapOf("sku" to "tern-mug"))))
                    }) { Text("Checkout") }
                    Button(onClick = { SampleApp.scheduleUploadWhenOnline(application) }) { Text("Upload now") }
                }
            }
        }
    }
}
